"""One OpenAI tool loop through hum's gateway, for a real agent CLI.

Usage: tool_loop.py <gateway address host:port> <model> <prompt>
The client offers get_weather (with HUM_TEST_TOOL_CHOICE=named it asks for
it by name), runs every call the model makes, and prints
{"rounds": [[name, args], ...], "final": text, "sids": [...]} as JSON.
"""
import json
import os
import sys

import openai

addr, model, prompt = sys.argv[1], sys.argv[2], sys.argv[3]
oa = openai.OpenAI(base_url=f"http://{addr}/v1", api_key=os.environ["HUM_TEST_GATEWAY_TOKEN"],
                   max_retries=0, timeout=120)
tools = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
messages = [{"role": "user", "content": prompt}]
rounds, sids, call_usage = [], set(), []
for _ in range(5):
    extra = {}
    if os.environ.get("HUM_TEST_TOOL_CHOICE") == "named":
        extra["tool_choice"] = {"type": "function", "function": {"name": "get_weather"}}
    raw = oa.chat.completions.with_raw_response.create(model=model, messages=messages, tools=tools, **extra)
    sids.add(raw.headers.get("x-hum-session"))
    resp = raw.parse()
    choice = resp.choices[0]
    if choice.finish_reason != "tool_calls":
        print(json.dumps({"rounds": rounds, "final": choice.message.content, "sids": sorted(sids),
                          "call_usage": call_usage}))
        sys.exit(0)
    call_usage.append(resp.usage.prompt_tokens)
    calls = choice.message.tool_calls
    rounds.append([[c.function.name, json.loads(c.function.arguments)] for c in calls])
    messages.append({"role": "assistant", "content": choice.message.content,
                     "tool_calls": [c.model_dump() for c in calls]})
    for c in calls:
        city = json.loads(c.function.arguments)["city"]
        messages.append({"role": "tool", "tool_call_id": c.id, "content": f"sunny in {city}"})
raise SystemExit("the loop did not end")
