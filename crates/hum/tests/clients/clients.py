"""Drives hum's gateway with the official OpenAI and Anthropic Python clients.

Usage: clients.py <gateway address host:port>
Prints one JSON object with what each client saw; the Rust test asserts on it.
"""
import json
import os
import sys

import anthropic
import openai

addr = sys.argv[1]
token = os.environ["HUM_TEST_GATEWAY_TOKEN"]
out = {}

oa = openai.OpenAI(base_url=f"http://{addr}/v1", api_key=token, max_retries=0)
out["models"] = sorted(m.id for m in oa.models.list())

history = [{"role": "user", "content": "hi"}]
first = oa.chat.completions.create(model="sim", messages=history)
out["openai_first"] = first.choices[0].message.content
out["openai_usage"] = first.usage.total_tokens
history += [{"role": "assistant", "content": first.choices[0].message.content}, {"role": "user", "content": "more"}]
second = oa.chat.completions.create(model="sim", messages=history)
out["openai_second"] = second.choices[0].message.content

stream = oa.chat.completions.create(model="sim", messages=[{"role": "user", "content": "stream"}], stream=True)
out["openai_stream"] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

try:
    oa.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    out["openai_404"] = None
except openai.NotFoundError as e:
    out["openai_404"] = e.status_code

an = anthropic.Anthropic(base_url=f"http://{addr}", api_key=token, max_retries=0)
msg = an.messages.create(model="sim", max_tokens=100, messages=[{"role": "user", "content": "bonjour"}])
out["anthropic_text"] = msg.content[0].text
out["anthropic_usage"] = msg.usage.output_tokens
with an.messages.stream(model="sim", max_tokens=100, messages=[{"role": "user", "content": "flux"}]) as s:
    out["anthropic_stream"] = "".join(s.text_stream)
    # What LangChain, the Vercel AI SDK and pydantic-ai read: the input
    # tokens at message_start, the output tokens at the end.
    out["anthropic_stream_usage"] = s.get_final_message().usage.model_dump()
with an.messages.stream(model="sim", max_tokens=100, messages=[{"role": "user", "content": "flux"}]) as s:
    starts = [e.message.usage.input_tokens for e in s if e.type == "message_start"]
    out["anthropic_stream_start_input"] = starts
try:
    an.messages.create(model="gpt-9", max_tokens=1, messages=[{"role": "user", "content": "x"}])
    out["anthropic_404"] = None
except anthropic.NotFoundError as e:
    out["anthropic_404"] = e.status_code

print(json.dumps(out))
