"""Function calling through hum's gateway with the official OpenAI and
Anthropic Python clients: each client runs its own tool loop.

Usage: tools.py <gateway address host:port>
Prints one JSON object with what each loop saw; the Rust test asserts on it.
The simulator calls tools on cue: `CALL_TOOL <name> <json>` (the calls of a
round together), `NEXT_ROUND` (the next round after the results), `SAY_FIRST
<text>` (text before the first call).
"""
import json
import os
import sys

import anthropic
import openai

addr = sys.argv[1]
token = os.environ["HUM_TEST_GATEWAY_TOKEN"]
out = {}


def run_function(name, args):
    """The client's own functions: what the agent must get back exactly."""
    if name == "get_weather":
        return f"sunny in {args['city']}"
    if name == "get_time":
        return f"12:00 in {args['zone']}"
    raise ValueError(name)


FUNCS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "description": "Time in a zone",
     "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}},
]
TOOLS = [{"name": f["function"]["name"], "description": f["function"]["description"],
          "input_schema": f["function"]["parameters"]} for f in FUNCS]

TWO_ROUNDS = 'CALL_TOOL get_weather {"city": "Paris"} NEXT_ROUND CALL_TOOL get_time {"zone": "CET"}'
TWO_AT_ONCE = 'CALL_TOOL get_weather {"city": "Oslo"} CALL_TOOL get_time {"zone": "UTC"}'
TEXT_FIRST = 'SAY_FIRST Let me check. CALL_TOOL get_weather {"city": "Rome"}'

oa = openai.OpenAI(base_url=f"http://{addr}/v1", api_key=token, max_retries=0)


def openai_loop(prompt, stream):
    """Runs the loop; returns (rounds of [name, args], first text, final text, sids)."""
    messages = [{"role": "user", "content": prompt}]
    rounds, first_text, sids, call_usage = [], None, set(), []
    for _ in range(5):
        used = None
        if stream:
            raw = oa.chat.completions.with_raw_response.create(
                model="sim", messages=messages, tools=FUNCS, stream=True)
            sids.add(raw.headers.get("x-hum-session"))
            text, calls, finish = "", {}, None
            for chunk in raw.parse():
                if getattr(chunk, "usage", None):
                    used = chunk.usage.prompt_tokens
                if not chunk.choices:
                    continue
                c = chunk.choices[0]
                text += c.delta.content or ""
                for tc in c.delta.tool_calls or []:
                    slot = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                    slot["id"] = tc.id or slot["id"]
                    if tc.function and tc.function.name:
                        slot["name"] = tc.function.name
                    if tc.function and tc.function.arguments:
                        slot["arguments"] += tc.function.arguments
                finish = c.finish_reason or finish
            calls = [calls[i] for i in sorted(calls)]
        else:
            raw = oa.chat.completions.with_raw_response.create(model="sim", messages=messages, tools=FUNCS)
            sids.add(raw.headers.get("x-hum-session"))
            resp = raw.parse()
            choice = resp.choices[0]
            text, finish = choice.message.content or "", choice.finish_reason
            calls = [{"id": t.id, "name": t.function.name, "arguments": t.function.arguments}
                     for t in choice.message.tool_calls or []]
            used = resp.usage.prompt_tokens
        if first_text is None:
            first_text = text
        if finish != "tool_calls":
            assert finish == "stop", finish
            return rounds, first_text, text, sorted(s for s in sids if s), call_usage
        call_usage.append(used)
        rounds.append([[c["name"], json.loads(c["arguments"])] for c in calls])
        messages.append({"role": "assistant", "content": text or None,
                         "tool_calls": [{"id": c["id"], "type": "function",
                                         "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]})
        for c in calls:
            messages.append({"role": "tool", "tool_call_id": c["id"],
                             "content": run_function(c["name"], json.loads(c["arguments"]))})
    raise RuntimeError("the loop did not end")


for name, prompt, stream in [("openai_plain", TWO_ROUNDS, False), ("openai_stream", TWO_ROUNDS, True),
                             ("openai_together", TWO_AT_ONCE, False), ("openai_text_first", TEXT_FIRST, True)]:
    rounds, first_text, final, sids, call_usage = openai_loop(prompt, stream)
    out[name] = {"rounds": rounds, "first_text": first_text, "final": final, "sids": sids,
                 "call_usage": call_usage}

try:
    oa.chat.completions.create(model="sim", tools=FUNCS, messages=[
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_nope", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_nope", "content": "12:00"}])
    out["openai_unknown_call"] = None
except openai.BadRequestError as e:
    out["openai_unknown_call"] = e.status_code

an = anthropic.Anthropic(base_url=f"http://{addr}", api_key=token, max_retries=0)


def anthropic_loop(prompt, stream):
    messages = [{"role": "user", "content": prompt}]
    rounds, first_text, call_usage, sids = [], None, [], set()
    for _ in range(5):
        if stream:
            with an.messages.stream(model="sim", max_tokens=100, tools=TOOLS, messages=messages) as s:
                sids.add(s.response.headers.get("x-hum-session"))
                msg = s.get_final_message()
        else:
            raw = an.messages.with_raw_response.create(model="sim", max_tokens=100, tools=TOOLS, messages=messages)
            sids.add(raw.headers.get("x-hum-session"))
            msg = raw.parse()
        text = "".join(b.text for b in msg.content if b.type == "text")
        uses = [b for b in msg.content if b.type == "tool_use"]
        if first_text is None:
            first_text = text
        assert msg.usage is not None
        if msg.stop_reason != "tool_use":
            assert msg.stop_reason == "end_turn", msg.stop_reason
            return rounds, first_text, text, call_usage, sorted(s for s in sids if s)
        call_usage.append(msg.usage.output_tokens)
        rounds.append([[u.name, u.input] for u in uses])
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": u.id, "content": run_function(u.name, u.input)} for u in uses]})
    raise RuntimeError("the loop did not end")


for name, prompt, stream in [("anthropic_plain", TWO_ROUNDS, False), ("anthropic_stream", TWO_ROUNDS, True),
                             ("anthropic_together", TWO_AT_ONCE, True), ("anthropic_text_first", TEXT_FIRST, False)]:
    rounds, first_text, final, call_usage, sids = anthropic_loop(prompt, stream)
    out[name] = {"rounds": rounds, "first_text": first_text, "final": final, "call_usage": call_usage,
                 "sids": sids}

try:
    an.messages.create(model="sim", max_tokens=10, tools=TOOLS, messages=[
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_nope", "name": "get_time", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_nope", "content": "12:00"}]}])
    out["anthropic_unknown_call"] = None
except anthropic.BadRequestError as e:
    out["anthropic_unknown_call"] = e.status_code

print(json.dumps(out))
