// hum's Ollama door, with the official ollama JavaScript client.
//
// Usage: node ollama_js.cjs <Ollama door address host:port> [model]
// $HUM_TEST_OLLAMA_JS names the client's install (its node_modules holds
// `ollama`); $HUM_TEST_CUE the question that makes the model call
// get_weather for {city}, $HUM_TEST_ANSWER the prefix that makes it answer
// exactly (the simulator's by default). Prints one JSON object with what
// the client saw.
const path = require('path')
const { Ollama } = require(path.join(process.env.HUM_TEST_OLLAMA_JS, 'node_modules', 'ollama'))

async function main() {
  const addr = process.argv[2]
  const model = process.argv[3] || 'sim'
  const c = new Ollama({ host: `http://${addr}` })
  const out = {}
  out.list = (await c.list()).models.map((m) => m.model)
  out.show_family = (await c.show({ model })).details.family
  const first = await c.chat({ model, messages: [{ role: 'user', content: 'hi' }] })
  out.chat = first.message.content
  out.chat_done = [first.done, first.done_reason]
  let text = ''
  let lines = 0
  for await (const p of await c.chat({ model, messages: [{ role: 'user', content: 'stream' }], stream: true })) {
    text += p.message.content
    lines += 1
  }
  out.stream = text
  out.stream_lines = lines

  const tools = [{ type: 'function', function: { name: 'get_weather', description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }]
  const cue = process.env.HUM_TEST_CUE || 'CALL_TOOL get_weather {"city": "{city}"}'
  const messages = [{ role: 'user', content: cue.replace('{city}', 'Oslo') }]
  out.tool_rounds = []
  for (let i = 0; i < 5; i++) {
    const r = await c.chat({ model, messages, tools })
    messages.push(r.message)
    if (!r.message.tool_calls || r.message.tool_calls.length === 0) {
      out.tool_final = r.message.content
      break
    }
    for (const call of r.message.tool_calls) {
      out.tool_rounds.push([call.function.name, call.function.arguments])
      messages.push({ role: 'tool', content: `sunny in ${call.function.arguments.city}`, tool_name: call.function.name })
    }
  }
  const shaped = await c.chat({ model, format: 'json', messages: [{ role: 'user', content: (process.env.HUM_TEST_ANSWER || 'SIM_ANSWER') + ' {"ok": true}' }] })
  out.format = JSON.parse(shaped.message.content)
  out.generate = (await c.generate({ model, prompt: 'why' })).response
  out.ps = [...new Set((await c.ps()).models.map((m) => m.model))]
  try {
    await c.chat({ model: 'llama3-nowhere', messages: [{ role: 'user', content: 'x' }] })
    out.unknown = null
  } catch (e) {
    out.unknown = [e.status_code, e.error]
  }
  process.stdout.write(JSON.stringify(out))
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e))
  process.exit(1)
})
