"""Structured output through hum's gateway with the official OpenAI Python
client, as frameworks use it (`chat.completions.parse` with a pydantic
model, `response_format` json_object, streaming).

Usage: structured.py <gateway address host:port>
Prints one JSON object with what each request saw; the Rust test asserts.
The simulator scripts its answers: `SIM_ANSWER <text>`, and
`SIM_ANSWERS <first> || <next>` (the session's next turn says <next>).
"""
import json
import os
import sys

import anthropic
import openai
from pydantic import BaseModel

addr = sys.argv[1]
token = os.environ["HUM_TEST_GATEWAY_TOKEN"]
out = {}
oa = openai.OpenAI(base_url=f"http://{addr}/v1", api_key=token, max_retries=0)


class Weather(BaseModel):
    city: str
    temp: int


def parsed(prompt):
    c = oa.chat.completions.parse(model="sim", response_format=Weather,
                                  messages=[{"role": "user", "content": prompt}])
    return c.choices[0].message.parsed.model_dump()


out["valid"] = parsed('SIM_ANSWER {"city": "Oslo", "temp": 3}')
out["repaired"] = parsed('SIM_ANSWERS It is 3 degrees in Oslo. || {"city": "Oslo", "temp": 3}')
for name, prompt in [("prose", "SIM_ANSWER It is cold in Oslo."), ("plain", "what is the weather?")]:
    try:
        parsed(prompt)
        out[name] = 200
    except openai.BadRequestError as e:
        out[name] = e.status_code
        out[name + "_message"] = str(e)
obj = oa.chat.completions.create(model="sim", response_format={"type": "json_object"},
                                 messages=[{"role": "user", "content": 'SIM_ANSWER {"ok": true}'}])
out["json_object"] = json.loads(obj.choices[0].message.content)
text = ""
for chunk in oa.chat.completions.create(model="sim", response_format={"type": "json_object"}, stream=True,
                                        messages=[{"role": "user", "content": 'SIM_ANSWER ```json {"ok": 1} ```'}]):
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
out["streamed"] = json.loads(text)
# Anthropic's structured output: a tool_choice naming a tool; the call's
# input is checked against its input_schema.
an = anthropic.Anthropic(base_url=f"http://{addr}", api_key=token, max_retries=0)
RECORD = [{"name": "record_weather", "description": "Record the weather",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}},
                            "required": ["city", "temp"]}}]


def forced(prompt):
    m = an.messages.create(model="sim", max_tokens=100, tools=RECORD,
                           tool_choice={"type": "tool", "name": "record_weather"},
                           messages=[{"role": "user", "content": prompt}])
    return {"stop": m.stop_reason, "inputs": [b.input for b in m.content if b.type == "tool_use"]}


out["forced_valid"] = forced('CALL_TOOL record_weather {"city": "Oslo", "temp": 3}')
out["forced_repaired"] = forced('CALL_TOOL record_weather {"city": "Oslo"} NEXT_ROUND '
                                'CALL_TOOL record_weather {"city": "Oslo", "temp": 3}')
try:
    forced("hello")
    out["forced_none"] = 200
except anthropic.BadRequestError as e:
    out["forced_none"] = e.status_code
print(json.dumps(out))
