"""The Responses API with the official client, for a real CLI: a follow-up
naming the previous response, a stream, a function loop that sends only
its results after the first request, and text.format.

Usage: responses_follow_up.py <gateway address host:port>  (HUM_TEST_MODEL,
HUM_TEST_CUE: the question that makes the model call get_weather for {city})
Prints what the client saw as JSON.
"""
import json
import os
import sys

import openai

addr = sys.argv[1]
oa = openai.OpenAI(base_url=f"http://{addr}/v1", api_key=os.environ["HUM_TEST_GATEWAY_TOKEN"],
                   max_retries=0, timeout=120)
model = os.environ.get("HUM_TEST_MODEL", "sim")
raw = oa.responses.with_raw_response.create(model=model, input="remember plums")
first = raw.parse()
out = {"first": first.output_text, "first_sid": raw.headers.get("x-hum-session")}
raw = oa.responses.with_raw_response.create(model=model, input="and then?", previous_response_id=first.id)
out["follow"] = raw.parse().output_text
out["follow_sid"] = raw.headers.get("x-hum-session")
out["stream"] = "".join(e.delta for e in oa.responses.create(model=model, input="flow", stream=True)
                        if e.type == "response.output_text.delta")

tools = [{"type": "function", "name": "get_weather", "description": "The weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
response = oa.responses.create(model=model, input=os.environ["HUM_TEST_CUE"].format(city="Quito"), tools=tools)
out["called"] = []
while calls := [o for o in response.output if o.type == "function_call"]:
    out["called"] += [json.loads(c.arguments)["city"] for c in calls]
    results = [{"type": "function_call_output", "call_id": c.call_id,
                "output": f"sunny in {json.loads(c.arguments)['city']}"} for c in calls]
    response = oa.responses.create(model=model, previous_response_id=response.id, input=results, tools=tools)
out["loop_final"] = response.output_text

schema = {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}},
          "required": ["city", "temp"], "additionalProperties": False}
shaped = oa.responses.create(model=model, input='ANSWER: {"city": "Oslo", "temp": 3}',
                             text={"format": {"type": "json_schema", "name": "weather", "schema": schema}})
out["structured"] = json.loads(shaped.output_text)
print(json.dumps(out))
