"""The official MCP Python client (PyPI `mcp`) against trawl: over stdio
(`trawl mcp`, reading a serving trawl's API) and over streamable HTTP
(`/api/mcp`, with and without the API token). Prints one JSON document:
per transport, the tools listed and each call's answer."""
import asyncio
import json
import sys

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

trawl, base, token, calls = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])


async def session(client):
    tools = await client.list_tools()
    out = {"tools": sorted(t.name for t in tools.tools), "schemas": {t.name: t.input_schema for t in tools.tools}, "calls": []}
    for name, args in calls:
        res = await client.call_tool(name, args)
        text = res.content[0].text if res.content else ""
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        out["calls"].append({"tool": name, "args": args, "is_error": bool(res.is_error), "chars": len(text), "answer": body})
    return out


async def main():
    result = {}
    stdio = StdioServerParameters(command=trawl, args=["mcp", "--url", base], env={"TRAWL_API_TOKEN": token})
    async with Client(stdio) as client:
        result["stdio"] = await session(client)
    for name, given in [("http", token), ("http_wrong_token", "not-the-token"), ("http_no_token", None)]:
        headers = {"Authorization": f"Bearer {given}"} if given else {}
        try:
            async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=60.0)) as http:
                async with Client(streamable_http_client(f"{base}/api/mcp", http_client=http)) as client:
                    result[name] = await session(client)
        except BaseException as e:  # refused: the client raises (an ExceptionGroup)
            result[name] = {"refused": repr(e)[:300]}
    print(json.dumps(result))


asyncio.run(main())
