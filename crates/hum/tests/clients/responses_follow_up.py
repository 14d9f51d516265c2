"""A Responses API follow-up naming the previous response, for a real CLI.

Usage: responses_follow_up.py <gateway address host:port>  (HUM_TEST_MODEL)
Prints {"first", "follow", "first_sid", "follow_sid"} as JSON.
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
print(json.dumps(out))
