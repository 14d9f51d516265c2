"""The openai-agents SDK with its default model (the Responses API) through
hum's gateway: an agent with a function tool runs its loop, plain and
streamed.

Usage: agents_sdk.py <gateway address host:port>
Prints one JSON object with what the runs saw; the Rust test asserts on it.
"""
import asyncio
import json
import os
import sys

from agents import Agent, Runner, function_tool, set_default_openai_client, set_tracing_disabled
from openai import AsyncOpenAI

addr = sys.argv[1]
client = AsyncOpenAI(base_url=f"http://{addr}/v1", api_key=os.environ["HUM_TEST_GATEWAY_TOKEN"], max_retries=0)
set_tracing_disabled(True)
set_default_openai_client(client, use_for_tracing=False)
called = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    called.append(city)
    return f"sunny in {city}"


# The model, and how a prompt makes it call the tool (the simulator's cue by
# default; the mock Messages API's for the real claude).
MODEL = os.environ.get("HUM_TEST_MODEL", "sim")
CUE = os.environ.get("HUM_TEST_CUE", 'CALL_TOOL get_weather {{"city": "{city}"}}')
agent = Agent(name="weather", instructions="Answer with the tool's words.", model=MODEL, tools=[get_weather])


async def main():
    out = {}
    plain = await Runner.run(agent, CUE.format(city="Oslo"))
    out["final"] = plain.final_output
    streamed = Runner.run_streamed(agent, CUE.format(city="Lima"))
    deltas = []
    async for e in streamed.stream_events():
        if e.type == "raw_response_event" and e.data.type == "response.output_text.delta":
            deltas.append(e.data.delta)
    out["streamed_final"] = streamed.final_output
    out["streamed_deltas"] = "".join(deltas)
    out["called"] = called
    print(json.dumps(out))


asyncio.run(main())
