"""A run that ends on a tool call, and comes back with the result only after
the gateway has let the waiting turn go, with the official OpenAI client.

Usage: late.py <gateway host:port> <model> <prompt>
Prints {"first_sid": …} on a line, waits for a line on stdin (the test
says when the turn was let go), sends the result, prints
{"late_sid": …, "final": …}.
"""
import json
import os
import sys

import openai

addr, model, prompt = sys.argv[1], sys.argv[2], sys.argv[3]
oa = openai.OpenAI(base_url=f"http://{addr}/v1", api_key=os.environ["HUM_TEST_GATEWAY_TOKEN"],
                   max_retries=0, timeout=300)
FUNCS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
messages = [{"role": "user", "content": prompt}]
raw = oa.chat.completions.with_raw_response.create(model=model, messages=messages, tools=FUNCS)
resp = raw.parse()
call = resp.choices[0].message.tool_calls[0]
print(json.dumps({"first_sid": raw.headers.get("x-hum-session"), "call": call.function.name}), flush=True)
sys.stdin.readline()
messages.append({"role": "assistant", "content": None, "tool_calls": [
    {"id": call.id, "type": "function", "function": {"name": call.function.name,
                                                     "arguments": call.function.arguments}}]})
messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny in Paris"})
raw = oa.chat.completions.with_raw_response.create(model=model, messages=messages, tools=FUNCS)
print(json.dumps({"late_sid": raw.headers.get("x-hum-session"),
                  "final": raw.parse().choices[0].message.content}), flush=True)
