"""hum's Ollama door in front of a real agent CLI, with the official client.

Usage: ollama_real.py <Ollama door address host:port>  (HUM_TEST_MODEL,
HUM_TEST_CUE: the question that makes the model call get_weather for {city})
Prints what the client saw as JSON.
"""
import json
import os
import sys

import ollama

addr = sys.argv[1]
model = os.environ["HUM_TEST_MODEL"]
cue = os.environ["HUM_TEST_CUE"]
c = ollama.Client(host=f"http://{addr}", timeout=120)
out = {"list": [m.model for m in c.list().models]}

first = c.chat(model=model, messages=[{"role": "user", "content": "remember plums"}])
out["first"] = first.message.content
out["first_counts"] = [first.prompt_eval_count, first.eval_count]
second = c.chat(model=model, messages=[
    {"role": "user", "content": "remember plums"},
    {"role": "assistant", "content": first.message.content},
    {"role": "user", "content": "and then?"}])
out["second"] = second.message.content
out["stream"] = "".join(p.message.content or "" for p in
                        c.chat(model=model, messages=[{"role": "user", "content": "flow"}], stream=True))


def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
      city: the city's name
    """
    return f"sunny in {city}"


messages = [{"role": "user", "content": cue.format(city="Oslo")}]
out["called"] = []
for _ in range(5):
    resp = c.chat(model=model, messages=messages, tools=[get_weather])
    messages.append(resp.message)
    if not resp.message.tool_calls:
        out["final"] = resp.message.content
        break
    for call in resp.message.tool_calls:
        out["called"].append(call.function.arguments["city"])
        messages.append({"role": "tool", "content": get_weather(**call.function.arguments),
                         "tool_name": call.function.name})
schema = {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}},
          "required": ["city", "temp"]}
shaped = c.chat(model=model, format=schema,
                messages=[{"role": "user", "content": 'ANSWER: {"city": "Oslo", "temp": 3}'}])
out["format"] = json.loads(shaped.message.content)
out["show_family"] = c.show(model).details.family
out["generate"] = c.generate(model=model, prompt="why").response
out["ps"] = sorted({m.model for m in c.ps().models})
print(json.dumps(out))
