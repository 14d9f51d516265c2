"""The OpenAI Responses API through hum's gateway, with the official client.

Usage: responses.py <gateway address host:port>
Prints one JSON object with what the client saw; the Rust test asserts on it.
"""
import json
import os
import sys

import openai

addr = sys.argv[1]
oa = openai.OpenAI(base_url=f"http://{addr}/v1", api_key=os.environ["HUM_TEST_GATEWAY_TOKEN"], max_retries=0)
out = {}

first = oa.responses.create(model="sim", input="hi", instructions="be brief")
out["plain"] = first.output_text
out["plain_usage"] = first.usage.total_tokens
out["plain_id"] = first.id
# A follow-up carries the whole conversation, as the Agents SDK sends it.
raw = oa.responses.with_raw_response.create(model="sim", input=[
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": first.output_text},
    {"role": "user", "content": "more"}])
second = raw.parse()
out["second"] = second.output_text
out["second_sid"] = raw.headers.get("x-hum-session")

events, deltas, final = [], [], None
for e in oa.responses.create(model="sim", input="stream", stream=True):
    events.append(e.type)
    if e.type == "response.output_text.delta":
        deltas.append(e.delta)
    if e.type == "response.completed":
        final = e.response
out["stream_events"] = events
out["stream_text"] = "".join(deltas)
out["stream_final"] = final.output_text

tools = [{"type": "function", "name": "get_weather", "description": "The weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
items = [{"role": "user", "content": 'CALL_TOOL get_weather {"city": "Paris"}'}]
rounds = []
for _ in range(5):
    resp = oa.responses.create(model="sim", input=items, tools=tools)
    calls = [o for o in resp.output if o.type == "function_call"]
    if not calls:
        out["loop_final"] = resp.output_text
        break
    items += [o.model_dump(exclude_none=True) for o in resp.output]
    for c in calls:
        args = json.loads(c.arguments)
        rounds.append([c.name, args])
        items.append({"type": "function_call_output", "call_id": c.call_id, "output": f"sunny in {args['city']}"})
out["loop_rounds"] = rounds

schema = {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}},
          "required": ["city", "temp"], "additionalProperties": False}
shaped = oa.responses.create(model="sim", input='SIM_ANSWER {"city": "Paris", "temp": 21}',
                             text={"format": {"type": "json_schema", "name": "weather", "schema": schema}})
out["structured"] = json.loads(shaped.output_text)

# A follow-up naming the previous response carries only its new input.
raw = oa.responses.with_raw_response.create(model="sim", input="again", previous_response_id=second.id)
out["follow"] = raw.parse().output_text
out["follow_sid"] = raw.headers.get("x-hum-session")
raw = oa.responses.with_raw_response.create(model="sim", input="hi")
out["other_sid"] = raw.headers.get("x-hum-session")
forged = second.id[:-1] + ("0" if second.id[-1] != "0" else "1")
try:
    oa.responses.create(model="sim", input="hi", previous_response_id=forged)
    out["forged"] = None
except openai.NotFoundError as e:
    out["forged"] = e.status_code
# Kept responses read back (store is on unless a request says not).
out["retrieved"] = oa.responses.retrieve(first.id).output_text
out["retrieved_stream"] = oa.responses.retrieve(final.id).output_text
unkept = oa.responses.create(model="sim", input="forget me", store=False)
for name, rid in [("unkept", unkept.id), ("retrieve_forged", forged)]:
    try:
        oa.responses.retrieve(rid)
        out[name] = None
    except openai.NotFoundError as e:
        out[name] = e.status_code
oa.responses.delete(first.id)
try:
    oa.responses.retrieve(first.id)
    out["deleted"] = None
except openai.NotFoundError as e:
    out["deleted"] = e.status_code
try:
    oa.responses.create(model="nowhere", input="x")
    out["unknown_model"] = None
except openai.NotFoundError as e:
    out["unknown_model"] = [e.status_code, e.body["code"]]
try:
    oa.responses.create(model="sim", input=[{"role": "assistant", "content": "x"}])
    out["bad"] = None
except openai.BadRequestError as e:
    out["bad"] = [e.status_code, e.body["type"]]
print(json.dumps(out))
