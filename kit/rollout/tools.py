"""Tools the model may call in multi-turn mode: declared in tools.yaml, parsed and called safely.

tools.yaml takes two forms of entry, mixed freely:
  the kit's    {name, description, parameters: {arg: {type, description}}, function: my_tools.py:calculator}
  verl's       {class_name: some.module.SomeTool, config: {type: native}, tool_schema: {type: function, ...}}
Calls are read from the model's text by verl's ToolParser registry (`inference.tool_parser`, hermes by
default). Whatever goes wrong with a call (malformed JSON, unknown tool, wrong argument types, a tool that
raises or runs past the timeout) comes back as an error message the model reads as that call's result; the
episode goes on. A result longer than inference.max_tool_output characters is cut, the cut marked. The model
picks tools only by their tools.yaml name and passes only the arguments their schema declares.
"""

import asyncio
import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from uuid import uuid4

from verl.experimental.agent_loop import tool_parser
from verl.experimental.agent_loop.tool_parser import ToolParser
from verl.tools.schemas import OpenAIFunctionToolSchema
from verl.tools.tool_registry import get_tool_class

from kit.errors import KitError
from kit.user_files import import_file, read_yaml

# verl logs each unreadable call as an error; here the model is told instead (ToolBox._run_calls).
logging.getLogger(tool_parser.__file__).setLevel(logging.CRITICAL)

JSON_TYPES = {"string": str, "number": (int, float), "integer": int, "boolean": bool, "array": list, "object": dict}


@dataclass
class ToolResult:
    text: str  # what the model reads as the tool message
    ok: bool  # False: the call was malformed or failed
    reward: float = 0.0  # added to the episode's reward

    def cut(self, limit: int) -> "ToolResult":
        """At most `limit` characters of text, so that one huge result cannot flood the model's context."""
        if len(self.text) <= limit:
            return self
        return replace(self, text=f"{self.text[:limit]}\n[... {len(self.text) - limit} more characters cut]")


class ToolBox:
    def __init__(self, path: str, tokenizer, parser: str, timeout: float, max_calls: int, max_output: int):
        self.tools = {tool.name: tool for tool in load_tools(path)}
        if parser not in ToolParser._registry:
            raise KitError(f"inference.tool_parser '{parser}' is unknown: choose one of {', '.join(ToolParser._registry)}")
        self.parser = ToolParser.get_tool_parser(parser, tokenizer)
        self.parser_name, self.timeout, self.max_calls, self.max_output = parser, timeout, max_calls, max_output
        self.loop = asyncio.new_event_loop()

    @property
    def schemas(self) -> list[dict]:
        """The tools in OpenAI format, for the chat template's `tools=`."""
        return [tool.schema.model_dump(exclude_none=True) for tool in self.tools.values()]

    def run_calls(self, response_ids: list[int]) -> list[ToolResult]:
        """Results of the calls in one model turn, in order; [] when the turn makes no call."""
        return self.loop.run_until_complete(self._run_calls(response_ids))

    async def _run_calls(self, response_ids):
        text, calls = await self.parser.extract_tool_calls(response_ids, [t.schema for t in self.tools.values()])
        results = [await self._call(call.name, call.arguments) for call in calls[:self.max_calls]]
        if len(calls) > self.max_calls:
            results.append(ToolResult(f"error: {len(calls)} tool calls in one turn; at most {self.max_calls} run", ok=False))
        # verl's hermes parser drops a <tool_call> block it cannot read; the model is told instead.
        unread = self.parser.tokenizer.decode(response_ids).count("<tool_call>") - len(calls) if self.parser_name == "hermes" else 0
        results += [ToolResult('error: a <tool_call> block is not valid JSON: write <tool_call>{"name": "...", '
                               '"arguments": {...}}</tool_call>', ok=False)] * max(0, unread)
        return [result.cut(self.max_output) for result in results]

    async def _call(self, name: str, arguments: str) -> ToolResult:
        tool = self.tools.get(name)
        if tool is None:
            return ToolResult(f"error: no tool named {name!r}; the tools are {', '.join(self.tools)}", ok=False)
        try:
            args = json.loads(arguments)
        except json.JSONDecodeError as err:
            return ToolResult(f"error: the arguments of {name} are not valid JSON ({err})", ok=False)
        problem = argument_problem(tool.schema, args)
        if problem:
            return ToolResult(f"error: {name}: {problem}", ok=False)
        try:
            text, reward = await asyncio.wait_for(tool.call(args), timeout=self.timeout)
        except asyncio.TimeoutError:
            return ToolResult(f"error: {name} took longer than {self.timeout} s and was stopped", ok=False)
        except Exception as err:  # the tool's own failure is the model's information, not the run's end
            return ToolResult(f"error: {name} failed: {type(err).__name__}: {err}", ok=False)
        if not math.isfinite(reward):
            return ToolResult(f"error: {name} failed: it returned the reward {reward}", ok=False)
        return ToolResult(text, ok=True, reward=reward)


def argument_problem(schema: OpenAIFunctionToolSchema, args) -> str | None:
    """What is wrong with the arguments against the tool's JSON schema, or None."""
    if not isinstance(args, dict):
        return "arguments must be a JSON object"
    params = schema.function.parameters
    missing = [key for key in params.required if key not in args]
    if missing:
        return f"missing argument(s) {', '.join(missing)}"
    for key, value in args.items():
        if key not in params.properties:
            return f"unknown argument {key!r}; it takes {', '.join(params.properties) or 'none'}"
        kind = params.properties[key].type
        expected = JSON_TYPES.get(kind) if isinstance(kind, str) else None
        if expected and (not isinstance(value, expected) or isinstance(value, bool) and kind != "boolean"):
            return f"argument {key!r} must be a {kind}, got {json.dumps(value)}"
    return None


class FunctionTool:
    """A Python function declared in the kit's simple form."""

    def __init__(self, entry: dict, where: str):
        self.name = entry["name"]
        properties = {key: {"type": "string", **spec} for key, spec in (entry.get("parameters") or {}).items()}
        self.schema = OpenAIFunctionToolSchema.model_validate({"type": "function", "function": {
            "name": self.name, "description": entry.get("description", ""),
            "parameters": {"type": "object", "properties": properties, "required": list(properties)}}})
        self.fn = _load_function(entry["function"], where)

    async def call(self, args: dict) -> tuple[str, float]:
        value = await asyncio.to_thread(self.fn, **args)
        if isinstance(value, dict):  # {"text": ..., "reward": ...}
            return str(value.get("text", "")), float(value.get("reward", 0.0))
        return str(value), 0.0


class VerlTool:
    """A verl BaseTool subclass declared in verl's tool YAML: one instance per call."""

    def __init__(self, entry: dict, where: str):
        try:
            schema = OpenAIFunctionToolSchema.model_validate(entry["tool_schema"])
            self.tool = get_tool_class(entry["class_name"])(config=entry.get("config") or {}, tool_schema=schema)
        except Exception as err:
            raise KitError(f"{where}: cannot build {entry.get('class_name')} ({type(err).__name__}: {err}): "
                           "check class_name, config and tool_schema") from None
        self.name, self.schema = schema.function.name, schema

    async def call(self, args: dict) -> tuple[str, float]:
        instance_id, _ = await self.tool.create(instance_id=str(uuid4()))
        try:
            response, reward, _ = await self.tool.execute(instance_id, args)
        finally:
            await self.tool.release(instance_id)
        return response.text or "", float(reward or 0.0)


def load_tools(path: str) -> list:
    content = read_yaml(path, "tools file", "set inference.tools to your tools.yaml")
    entries = content.get("tools") if isinstance(content, dict) else None
    if not isinstance(entries, list):
        raise KitError(f"tools file '{path}' must hold a list under `tools:` (see tools.yaml)")
    tools = []
    for i, entry in enumerate(entries):
        where = f"{path}: tool {i + 1}"
        if isinstance(entry, dict) and "class_name" in entry:
            tools.append(VerlTool(entry, where))
        elif isinstance(entry, dict) and {"name", "function"} <= entry.keys():
            tools.append(FunctionTool(entry, where))
        else:
            raise KitError(f"{where} needs name, description, parameters and function (module.py:function), "
                           "or verl's class_name and tool_schema")
    return tools


def _load_function(reference: str, where: str):
    file, _, name = reference.partition(":")
    if not Path(file).is_file() or not name:
        raise KitError(f"{where}: function '{reference}' must be FILE.py:NAME with an existing file")
    module = import_file(file, f"{where}: tool file")
    if not callable(getattr(module, name, None)):
        raise KitError(f"{where}: {file} has no function '{name}'")
    return getattr(module, name)
