"""Agent frameworks that end a run on a tool call and never send its
result (pydantic-ai's output tool, openai-agents' stop_on_first_tool,
LangChain's function-calling structured output), driven through hum's
gateway with the official OpenAI and Anthropic Python clients as those
frameworks use them.

Usage: parked.py <gateway address host:port>
Prints one JSON object with what each step saw; the Rust test asserts on it.
The pool behind the gateway has one cell.
"""
import json
import os
import sys
import time

import anthropic
import openai

addr = sys.argv[1]
token = os.environ["HUM_TEST_GATEWAY_TOKEN"]
out = {}

FUNCS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
TOOLS = [{"name": "get_weather", "description": "Weather in a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]

oa = openai.OpenAI(base_url=f"http://{addr}/v1", api_key=token, max_retries=0, timeout=300)
an = anthropic.Anthropic(base_url=f"http://{addr}", api_key=token, max_retries=0, timeout=300)


def ends_on_a_call(prompt):
    """A run that stops at the agent's first tool call (and never answers it)."""
    messages = [{"role": "user", "content": prompt}]
    raw = oa.chat.completions.with_raw_response.create(model="sim", messages=messages, tools=FUNCS)
    resp = raw.parse()
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    call = choice.message.tool_calls[0]
    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function",
         "function": {"name": call.function.name, "arguments": call.function.arguments}}]})
    return raw.headers.get("x-hum-session"), messages, call


# 1. A run ends on a tool call: its turn is parked, holding the only cell.
sid_a, history_a, call_a = ends_on_a_call('CALL_TOOL get_weather {"city": "Paris"}')
out["a_sid"] = sid_a

# 2. Another conversation's plain request needs that cell: the parked turn
#    gives it back, the request is answered (not a 429 after minutes).
started = time.monotonic()
try:
    plain = oa.chat.completions.create(model="sim", messages=[{"role": "user", "content": "hello B"}])
    out["b_text"] = plain.choices[0].message.content
except openai.APIStatusError as e:
    out["b_text"] = None
    out["b_error"] = e.status_code
out["b_seconds"] = time.monotonic() - started

# 3. The first run comes back late with its result: the same conversation
#    goes on (same sid), and the agent got the client's result.
late = history_a + [{"role": "tool", "tool_call_id": call_a.id, "content": "sunny in Paris"}]
try:
    raw = oa.chat.completions.with_raw_response.create(model="sim", messages=late, tools=FUNCS)
    out["a_late_sid"] = raw.headers.get("x-hum-session")
    out["a_late_text"] = raw.parse().choices[0].message.content
except openai.APIStatusError as e:
    out["a_late_error"] = e.status_code

# 4. The same with the Anthropic client: a run that stops at a tool use,
#    another request takes the cell, the result comes late.
first = an.messages.with_raw_response.create(
    model="sim", max_tokens=100, tools=TOOLS,
    messages=[{"role": "user", "content": 'CALL_TOOL get_weather {"city": "Rome"}'}])
msg = first.parse()
assert msg.stop_reason == "tool_use", msg
use = [b for b in msg.content if b.type == "tool_use"][0]
out["c_sid"] = first.headers.get("x-hum-session")
oa.chat.completions.create(model="sim", messages=[{"role": "user", "content": "hello D"}])
try:
    raw = an.messages.with_raw_response.create(
        model="sim", max_tokens=100, tools=TOOLS, messages=[
            {"role": "user", "content": 'CALL_TOOL get_weather {"city": "Rome"}'},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                          "content": "rainy in Rome"}]}])
    out["c_late_sid"] = raw.headers.get("x-hum-session")
    out["c_late_text"] = "".join(b.text for b in raw.parse().content if b.type == "text")
except anthropic.APIStatusError as e:
    out["c_late_error"] = e.status_code

# 5. A run ends on a call; the framework then sends a new user message in
#    the same conversation with no session header and no result: it is
#    the same conversation (same sid), the old turn is cancelled, and a
#    result for the old call is refused from then on.
sid_e, history_e, call_e = ends_on_a_call('CALL_TOOL get_weather {"city": "Oslo"}')
out["e_sid"] = sid_e
raw = oa.chat.completions.with_raw_response.create(
    model="sim", messages=history_e + [{"role": "user", "content": "never mind, say hi"}])
out["e_next_sid"] = raw.headers.get("x-hum-session")
out["e_next_text"] = raw.parse().choices[0].message.content
try:
    oa.chat.completions.create(model="sim", tools=FUNCS, messages=history_e + [
        {"role": "tool", "tool_call_id": call_e.id, "content": "sunny in Oslo"}])
    out["e_late"] = 200
except openai.BadRequestError as e:
    out["e_late"] = e.status_code

print(json.dumps(out))
