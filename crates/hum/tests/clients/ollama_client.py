"""hum's Ollama door, with the official ollama Python client.

Usage: ollama_client.py <Ollama door address host:port> [model]
Sends no token unless $OLLAMA_API_KEY is set (the client's own rule).
Prints one JSON object with what the client saw; the Rust test asserts on it.
"""
import json
import sys

import httpx
import ollama
import openai

addr = sys.argv[1]
model = sys.argv[2] if len(sys.argv) > 2 else "sim"
c = ollama.Client(host=f"http://{addr}")
out = {}

listed = c.list().models
out["list"] = [m.model for m in listed]
out["list_family"] = listed[0].details.family
shown = c.show(model)
out["show_family"] = shown.details.family
out["show_capabilities"] = list(shown.capabilities or [])
out["version"] = httpx.get(f"http://{addr}/api/version").json()["version"]

first = c.chat(model=model, messages=[{"role": "user", "content": "hi"}])
out["chat"] = first.message.content
out["chat_done"] = [first.done, first.done_reason]
out["chat_counts"] = [first.prompt_eval_count, first.eval_count]
out["chat_durations"] = [first.total_duration, first.prompt_eval_duration, first.eval_duration]
# A later request carries the whole conversation: the same cell goes on.
second = c.chat(model=model, messages=[
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": first.message.content},
    {"role": "user", "content": "more"}])
out["second"] = second.message.content

parts = list(c.chat(model=model, messages=[{"role": "user", "content": "stream"}], stream=True))
out["stream"] = "".join(p.message.content or "" for p in parts)
out["stream_lines"] = len(parts)
out["stream_last"] = [parts[-1].done, parts[-1].done_reason, parts[-1].eval_count]


def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
      city: the city's name
    """
    return f"sunny in {city}"


def tool_loop(question, stream):
    messages = [{"role": "user", "content": question}]
    rounds = []
    for _ in range(5):
        if stream:
            calls, text = [], ""
            for p in c.chat(model=model, messages=messages, tools=[get_weather], stream=True):
                text += p.message.content or ""
                calls += p.message.tool_calls or []
            message = {"role": "assistant", "content": text,
                       "tool_calls": [{"function": {"name": t.function.name, "arguments": t.function.arguments}} for t in calls]}
        else:
            resp = c.chat(model=model, messages=messages, tools=[get_weather])
            calls, text, message = resp.message.tool_calls or [], resp.message.content, resp.message
        messages.append(message)
        if not calls:
            return rounds, text
        for call in calls:
            args = dict(call.function.arguments)
            rounds.append([call.function.name, args])
            messages.append({"role": "tool", "content": get_weather(**args), "tool_name": call.function.name})
    return rounds, None


out["tool_rounds"], out["tool_final"] = tool_loop('CALL_TOOL get_weather {"city": "Paris"}', False)
out["stream_tool_rounds"], out["stream_tool_final"] = tool_loop('CALL_TOOL get_weather {"city": "Rome"}', True)

schema = {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}},
          "required": ["city", "temp"]}
shaped = c.chat(model=model, messages=[{"role": "user", "content": 'SIM_ANSWER {"city": "Paris", "temp": 21}'}],
                format=schema)
out["format"] = json.loads(shaped.message.content)

g = c.generate(model=model, prompt="why", system="be brief")
out["generate"] = [g.response, g.done, g.done_reason]
out["generate_stream"] = "".join(p.response for p in c.generate(model=model, prompt="flow", stream=True))
loaded = c.generate(model=model)
out["load"] = loaded.done_reason

out["ps"] = sorted({m.model for m in c.ps().models})

try:
    c.chat(model="llama3-nowhere", messages=[{"role": "user", "content": "x"}])
    out["unknown"] = None
except ollama.ResponseError as e:
    out["unknown"] = [e.status_code, e.error]
try:
    c.chat(model=model, messages=[{"role": "assistant", "content": "x"}])
    out["bad"] = None
except ollama.ResponseError as e:
    out["bad"] = [e.status_code, e.error]
# Ollama serves OpenAI's API on its port too; clients pass a dummy key.
oa = openai.OpenAI(base_url=f"http://{addr}/v1", api_key="ollama", max_retries=0)
out["openai_models"] = [m.id for m in oa.models.list().data]
out["openai_chat"] = oa.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "via openai"}]).choices[0].message.content
print(json.dumps(out))
