"""Every fenced code block in ``docs/*.md`` and ``README.md`` runs, so the docs cannot rot.

A block is found by its fence and named by its language: ``python`` blocks run here,
``console`` blocks are checked command by command (a make target exists, an example file
exists, a ``trio-tradovate`` command line parses), ``text`` blocks are diagrams and output. A
fence without a language fails, so no Python can hide in an untagged block.

A python block with no marker is a whole program and is executed as it stands. A block that is a
fragment says how it runs with an HTML comment on the line before its fence (invisible when the
Markdown is rendered)::

    <!-- run: main -->            the block ends in trio.run(main): main() runs against the
                                  in-process simulator in virtual time (every open_engine is
                                  pointed at it) for up to 30 s; it must reach LIVE and print
    <!-- run: call NAME -->       the block defines NAME; it is awaited (or called) with its
                                  arguments by name: sim, engine (LIVE), autojump_clock,
                                  account_id, order_id, apply (a recorder that must be called)
    <!-- run: call NAME for 10 -->   NAME never returns: it runs 10 virtual seconds
    <!-- run: loopback NAME -->   NAME is awaited on the real clock (127.0.0.1 sockets)
    <!-- run: matches MODULE -->  every name the block assigns equals MODULE's (documented
                                  defaults cannot drift from the code)

An unknown marker fails, and a bare block that calls ``trio.run`` fails with a message saying to
mark it ``main`` (it would otherwise try to reach Tradovate). Nothing is skipped silently.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import importlib
import inspect
import re
import shlex
import tomllib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trio_tradovate
from trio_tradovate import Engine, State, open_engine
from trio_tradovate.cli import build_parser
from trio_tradovate.sim import SimConfig, Simulator, open_simulator

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
LANGUAGES = {"python", "console", "text", "toml"}
FENCE = re.compile(r"^(```+)\s*(\S*)\s*$")
MARKER = re.compile(r"^<!--\s*run:\s*(.*?)\s*-->$")
MAIN_SECONDS = 30.0


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text and the marker above it."""

    path: Path
    line: int
    language: str
    source: str
    marker: str | None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def find_blocks(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file, in order."""
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, language = opening.groups()
        marker = None
        above = index - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        if above >= 0 and (found := MARKER.match(lines[above].strip())):
            marker = found.group(1)
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        assert end < len(lines), f"{path.name}:{index + 1}: fence never closed"
        source = "\n".join(lines[index + 1 : end]) + "\n"
        blocks.append(Block(path, index + 1, language, source, marker))
        index = end + 1
    return blocks


ALL_BLOCKS = [block for path in DOCUMENTS for block in find_blocks(path)]
PYTHON = [block for block in ALL_BLOCKS if block.language == "python"]
LOOPBACK = [block for block in PYTHON if (block.marker or "").startswith("loopback ")]
VIRTUAL = [block for block in PYTHON if block not in LOOPBACK]
CONSOLE = [block for block in ALL_BLOCKS if block.language == "console"]
TOML = [block for block in ALL_BLOCKS if block.language == "toml"]


def ids(blocks: list[Block]) -> list[str]:
    return [block.name for block in blocks]


# --- what a marker means ---------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How one python block runs, parsed from its marker."""

    kind: str  # "program", "main", "call", "loopback" or "matches"
    target: str = ""
    seconds: float | None = None


def plan_for(block: Block) -> Plan:
    marker = block.marker
    if marker is None:
        return Plan("program")
    words = marker.split()
    if words == ["main"]:
        return Plan("main")
    if len(words) == 2 and words[0] in ("call", "loopback", "matches"):
        return Plan(words[0], words[1])
    if len(words) == 4 and words[0] == "call" and words[2] == "for":
        return Plan("call", words[1], float(words[3]))
    raise AssertionError(f"{block.name}: unknown run marker {marker!r} (see {__name__})")


def without_trio_run(source: str) -> str:
    """``source`` minus its top-level ``trio.run(...)`` statements."""
    tree = ast.parse(source)
    tree.body = [node for node in tree.body if not _is_trio_run(node)]
    return ast.unparse(tree)


def _is_trio_run(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and ast.unparse(node.value.func) == "trio.run"
    )


def execute(block: Block, source: str | None = None) -> dict[str, Any]:
    """Run the block's text as a module body; its namespace afterwards."""
    namespace: dict[str, Any] = {"__name__": f"docs_block_{block.line}"}
    code = compile(source or block.source, block.name, "exec")
    exec(code, namespace)
    return namespace


# --- the fixtures a block's function may ask for ------------------------------------------------


@dataclass
class Recorder:
    """The ``apply`` argument: counts what it was given."""

    calls: list[Any] = dataclasses.field(default_factory=list)

    def __call__(self, item: Any) -> None:
        self.calls.append(item)


@contextlib.asynccontextmanager
async def live_engine(sim: Simulator) -> AsyncIterator[Engine]:
    async with open_engine(sim.engine_config()) as engine:
        await engine.wait_for(State.LIVE)
        yield engine


def first_id(engine: Engine | None, entity_type: str) -> int:
    assert engine is not None
    return int(engine.store.of_type(entity_type)[0]["id"])


def arguments_for(
    function: Callable[..., Any],
    sim: Simulator,
    engine: Engine | None,
    clock: trio.testing.MockClock,
    recorder: Recorder,
) -> dict[str, Any]:
    available: dict[str, Callable[[], Any]] = {
        "sim": lambda: sim,
        "engine": lambda: engine,
        "autojump_clock": lambda: clock,
        "apply": lambda: recorder,
        "account_id": lambda: first_id(engine, "account"),
        "order_id": lambda: first_id(engine, "order"),
    }
    arguments = {}
    for name in inspect.signature(function).parameters:
        assert name in available, f"no fixture for argument {name!r} (have {sorted(available)})"
        arguments[name] = available[name]()
    return arguments


# --- the tests --------------------------------------------------------------------------------


def test_blocks_are_found() -> None:
    """The scan sees the blocks it must (an empty scan would pass every test below)."""
    assert len(PYTHON) >= 10
    assert {block.path.name for block in PYTHON} >= {"README.md", "index.md", "simulator.md"}


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=ids(ALL_BLOCKS))
def test_every_block_names_a_known_language(block: Block) -> None:
    assert block.language in LANGUAGES, (
        f"{block.name}: fence language {block.language!r}; use one of {sorted(LANGUAGES)}"
    )


@pytest.mark.parametrize("block", PYTHON, ids=ids(PYTHON))
def test_every_python_block_has_a_way_to_run(block: Block) -> None:
    plan = plan_for(block)
    ast.parse(block.source)
    if plan.kind == "program":
        assert not any(_is_trio_run(node) for node in ast.parse(block.source).body), (
            f"{block.name} calls trio.run: mark it <!-- run: main --> so it runs against "
            "the simulator instead of a real server"
        )
    if plan.kind in ("call", "loopback"):
        assert re.search(rf"^(async )?def {plan.target}\(", block.source, re.M), (
            f"{block.name}: the marker names {plan.target!r}, which the block does not define"
        )


@pytest.mark.parametrize("block", VIRTUAL, ids=ids(VIRTUAL))
async def test_python_block_runs(
    block: Block,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plan = plan_for(block)
    if plan.kind == "program":
        execute(block)
    elif plan.kind == "matches":
        await run_matches(block, plan)
    elif plan.kind == "main":
        await run_main(block, monkeypatch, capsys)
    else:
        await run_call(block, plan, autojump_clock)


async def run_matches(block: Block, plan: Plan) -> None:
    module = importlib.import_module(plan.target)
    namespace = {"__name__": "docs_block", **vars(module)}
    tree = ast.parse(block.source)
    assigned = [
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    ]
    assert assigned, f"{block.name}: a 'matches' block must assign the names it documents"
    exec(compile(block.source, block.name, "exec"), namespace)
    for name in assigned:
        assert namespace[name] == getattr(module, name), f"{block.name}: {name} differs"


async def run_main(
    block: Block, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    engines: list[Engine] = []
    async with open_simulator(SimConfig(seed=3)) as sim:
        base = sim.engine_config()

        @contextlib.asynccontextmanager
        async def pointed_at_sim(config: trio_tradovate.EngineConfig) -> AsyncIterator[Engine]:
            redirected = dataclasses.replace(
                config,
                credentials=base.credentials,
                connector=base.connector,
                http_transport=base.http_transport,
                wall_clock=base.wall_clock,
            )
            async with open_engine(redirected) as engine:
                engines.append(engine)
                yield engine

        monkeypatch.setattr(trio_tradovate, "open_engine", pointed_at_sim)
        namespace = execute(block, without_trio_run(block.source))
        with trio.move_on_after(MAIN_SECONDS):
            await namespace["main"]()
    assert engines, f"{block.name}: main() never opened an engine"
    assert any(record.dest is State.LIVE for record in engines[0].transitions)
    assert capsys.readouterr().out.strip(), f"{block.name}: main() printed nothing"


async def run_call(block: Block, plan: Plan, clock: trio.testing.MockClock) -> None:
    function = execute(block)[plan.target]
    recorder = Recorder()
    wants = inspect.signature(function).parameters
    async with open_simulator(SimConfig(seed=3)) as sim:
        engine_cm = live_engine(sim) if {"engine", "account_id", "order_id"} & set(wants) else None
        async with contextlib.AsyncExitStack() as stack:
            engine = await stack.enter_async_context(engine_cm) if engine_cm else None
            arguments = arguments_for(function, sim, engine, clock, recorder)
            if plan.seconds is None:
                with trio.fail_after(300):
                    result = function(**arguments)
                    if inspect.isawaitable(result):
                        await result
            else:
                with trio.move_on_after(plan.seconds) as scope:
                    await function(**arguments)
                assert scope.cancelled_caught, f"{block.name}: {plan.target} returned early"
    if "apply" in wants:
        assert recorder.calls, f"{block.name}: {plan.target} never called apply"


@pytest.mark.loopback
@pytest.mark.parametrize("block", LOOPBACK, ids=ids(LOOPBACK))
async def test_python_block_runs_on_loopback(block: Block) -> None:
    function = execute(block)[plan_for(block).target]
    with trio.fail_after(60):
        await function()


# --- console blocks ---------------------------------------------------------------------------


def commands(block: Block) -> list[str]:
    """The command lines of a console block: ``$``-prompted lines if it has any, else every
    line; continuation backslashes joined, comments dropped."""
    lines = block.source.splitlines()
    if any(line.startswith("$ ") for line in lines):
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    joined = "\n".join(lines).replace("\\\n", " ")
    return [line.split(" #")[0].strip() for line in joined.splitlines() if line.strip()]


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, re.M))


def check_command(line: str) -> None:
    words = shlex.split(line)
    program = words[0].removeprefix(".venv/bin/")
    if program == "make":
        assert set(words[1:]) <= make_targets(), f"no such make target: {line}"
    elif program == "trio-tradovate":
        parser: argparse.ArgumentParser = build_parser()
        parser.parse_args(words[1:])
    elif program == "python" and words[1] == "-c":
        compile(words[2], line, "exec")
    elif program == "python":
        assert (ROOT / words[1]).is_file(), f"no such file: {line}"
    elif program == "export":
        assert all(re.fullmatch(r"TRADOVATE_\w+=.*", word) for word in words[1:]), line
    elif program == "curl":
        assert any(word.startswith("http://127.0.0.1:") for word in words), line
    else:
        raise AssertionError(f"no way to check {line!r}: add a case to check_command")


@pytest.mark.parametrize("block", CONSOLE, ids=ids(CONSOLE))
def test_console_block_commands_exist(block: Block) -> None:
    lines = commands(block)
    assert lines, f"{block.name}: an empty console block"
    for line in lines:
        check_command(line)


def test_readme_quick_start_is_make_demo_and_make_test() -> None:
    readme = ROOT / "README.md"
    quick_start = readme.read_text().splitlines().index("## Quick start") + 1
    first = next(block for block in find_blocks(readme) if block.line > quick_start)
    assert first.language == "console"
    assert commands(first) == ["make demo", "make test"]
    assert {"demo", "test"} <= make_targets()


@pytest.mark.parametrize("block", TOML, ids=[block.name for block in TOML])
def test_toml_block_parses(block: Block) -> None:
    """A settings snippet is valid TOML (the plugin's page also runs pytest with it:
    ``tests/test_pytest_plugin.py``)."""
    tomllib.loads(block.source)
