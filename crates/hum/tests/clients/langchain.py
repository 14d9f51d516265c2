"""LangChain's default structured output (`with_structured_output` on
ChatOpenAI, which sends a json_schema `response_format`) through hum's
gateway.

Usage: langchain.py <gateway address host:port>
Prints one JSON object; the Rust test asserts on it. The simulator scripts
its answer with `SIM_ANSWER <text>`.
"""
import json
import os
import sys

from langchain_openai import ChatOpenAI
from pydantic import BaseModel

addr = sys.argv[1]
llm = ChatOpenAI(model="sim", base_url=f"http://{addr}/v1", api_key=os.environ["HUM_TEST_GATEWAY_TOKEN"],
                 max_retries=0)


class Weather(BaseModel):
    city: str
    temp: int


out = {}
out["structured"] = llm.with_structured_output(Weather).invoke(
    'SIM_ANSWER {"city": "Oslo", "temp": 3}').model_dump()
try:
    llm.with_structured_output(Weather).invoke("SIM_ANSWER It is cold.")
    out["prose"] = 200
except Exception as e:  # LangChain passes the client's BadRequestError on
    out["prose"] = getattr(e, "status_code", repr(e))
print(json.dumps(out))
