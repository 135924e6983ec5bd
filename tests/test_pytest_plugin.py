"""The package's pytest plugin, as a user's test suite meets it (pytester).

Each code block of ``docs/testing.md`` is a user's test module; it runs in a pytest of its
own, with the plugin loaded the way users get it (its entry point), and every test in it
must pass. A suite that uses none of the fixtures must run exactly as with the plugin off.

Runs that use the fixtures go to a subprocess (:func:`run_user_suite`): an in-process run
would drop the engine's modules from ``sys.modules`` afterwards (pytester restores its
snapshot), while the package, imported by this process, keeps names bound to the old ones,
so a second run would compare two different ``State`` enums.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from .docs_blocks import DOCS, python_blocks

pytest_plugins = ["pytester"]

BLOCKS = python_blocks("testing.md")
FIXTURES = (
    "tradovate_sim",
    "tradovate_sim_config",
    "tradovate_sim_factory",
    "tradovate_engine",
    "tradovate_engine_config",
    "tradovate_connector",
    "tradovate_faults",
    "tradovate_server",
)
TRIO_MODE = "[pytest]\ntrio_mode = true\nfilterwarnings = error\naddopts = --strict-markers\n"


def run_user_suite(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """pytest in a fresh interpreter, as a user runs it (see the module docstring)."""
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)


def count_tests(source: str) -> int:
    return len(re.findall(r"^async def test_|^def test_", source, flags=re.MULTILINE))


def test_the_page_documents_every_fixture_and_its_examples_use_them() -> None:
    page = (DOCS / "testing.md").read_text()
    assert [name for name in FIXTURES if f"`{name}`" not in page] == []
    shown = "\n".join(BLOCKS)
    # the connector is what tradovate_faults drives; every other fixture has an example
    assert [name for name in FIXTURES if name not in shown] == ["tradovate_connector"]


GENERATED = """
import pytest
import trio
import trio.testing

from trio_tradovate import EngineConfig, State
from trio_tradovate.sim import SimConfig, Simulator
from trio_tradovate.testing import ScriptedConnector

@pytest.mark.tradovate_sim(seed=9, accounts=4)
def test_config(tradovate_sim_config):
    assert tradovate_sim_config == SimConfig(seed=9, accounts=4)

async def test_sim(tradovate_sim):
    assert isinstance(tradovate_sim, Simulator)
    assert tradovate_sim.config.seed == 0

async def test_factory(tradovate_sim_factory, tradovate_sim):
    one = await tradovate_sim_factory(seed=3)
    two = await tradovate_sim_factory(tradovate_sim.config, accounts=1)
    assert (one.config.seed, two.config.seed, two.config.accounts) == (3, 0, 1)

async def test_connector(tradovate_connector):
    assert isinstance(tradovate_connector, ScriptedConnector)

@pytest.mark.tradovate_engine(heartbeat_interval=1.5)
async def test_engine_config(tradovate_engine_config):
    assert isinstance(tradovate_engine_config, EngineConfig)
    assert tradovate_engine_config.heartbeat_interval == 1.5

async def test_engine(tradovate_engine, autojump_clock):
    assert tradovate_engine.state is State.LIVE

async def test_faults(tradovate_faults, tradovate_engine, autojump_clock):
    await tradovate_faults.apply({"kind": "close"})
    await tradovate_engine.wait_for(State.BACKOFF)
    await tradovate_engine.wait_for(State.LIVE)
    assert tradovate_faults.injected["close"] == 1

async def test_engine_without_a_mock_clock(tradovate_engine):
    pass

@pytest.mark.tradovate_sim(sede=1)
async def test_a_misspelt_marker_field(tradovate_sim):
    pass

@pytest.mark.tradovate_engine(heartbeat_intervall=1)
async def test_a_misspelt_engine_field(tradovate_engine_config):
    pass
"""

FAILING = """
from trio_tradovate import State

async def test_wrong_expectation(tradovate_engine, autojump_clock):
    assert tradovate_engine.state is State.STOPPED, "the user's own message"

async def test_right_expectation(tradovate_engine, autojump_clock):
    assert tradovate_engine.state is State.LIVE
"""


@pytest.mark.loopback  # one of the docs' blocks uses tradovate_server
def test_user_suites_using_the_fixtures(pytester: pytest.Pytester) -> None:
    """One fresh pytest over several user modules: each docs block, a module asking for
    every fixture (and the markers' bad input), and one whose assertion fails."""
    [settings] = python_blocks("testing.md", language="toml")  # the page's own setting
    strict = 'addopts = "--strict-markers"\nfilterwarnings = ["error"]\n'
    pytester.makepyprojecttoml(settings + strict)
    modules = {f"test_block{i}": block for i, block in enumerate(BLOCKS)}
    pytester.makepyfile(**modules, test_generated=GENERATED, test_failing=FAILING)
    result = run_user_suite(pytester, "-rA")
    outcomes: dict[str, str] = {}
    for line in result.outlines:
        found = re.match(r"(PASSED|FAILED|ERROR) (test_\w+\.py::\w+)", line)
        if found:
            outcomes[found[2]] = found[1]
    # every test of every docs block passes
    for name, source in modules.items():
        mine = {test: outcome for test, outcome in outcomes.items() if test.startswith(name)}
        assert len(mine) == count_tests(source), name
        assert set(mine.values()) == {"PASSED"}, mine
    # each fixture, asked for by a test of its own; bad input stops with a usage error
    generated = {t.split("::")[1]: o for t, o in outcomes.items() if "generated" in t}
    assert generated == {
        "test_config": "PASSED",
        "test_sim": "PASSED",
        "test_factory": "PASSED",
        "test_connector": "PASSED",
        "test_engine_config": "PASSED",
        "test_engine": "PASSED",
        "test_faults": "PASSED",
        # pytest-trio sets async fixtures up within the call, so their errors are failures
        "test_engine_without_a_mock_clock": "FAILED",
        "test_a_misspelt_marker_field": "ERROR",
        "test_a_misspelt_engine_field": "FAILED",
    }
    out = result.stdout.str()
    assert "add the `autojump_clock` fixture to the test's arguments" in out
    assert "@pytest.mark.tradovate_sim:" in out
    assert "sede" in out
    assert "heartbeat_intervall" in out
    # a failing user assertion still fails, with the user's message
    assert outcomes["test_failing.py::test_wrong_expectation"] == "FAILED"
    assert outcomes["test_failing.py::test_right_expectation"] == "PASSED"
    assert "AssertionError: the user's own message" in out
    assert result.ret == pytest.ExitCode.TESTS_FAILED


PLAIN_SUITE = {
    "conftest": """
        import pytest

        @pytest.fixture
        def sim():
            return "the user's own sim"
        """,
    "test_plain": """
        import pytest

        def test_uses_its_own_sim(sim, request):
            assert sim == "the user's own sim"
            assert not [n for n in request.fixturenames if n.startswith("tradovate_")]

        @pytest.mark.parametrize("n", [1, 2, 3])
        def test_parametrized(n):
            assert n < 3

        async def test_async_plain():
            pass

        @pytest.mark.skip(reason="user skip")
        def test_skipped():
            pass
        """,
}


def test_a_suite_not_using_the_fixtures_runs_as_without_the_plugin(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(TRIO_MODE)
    pytester.makepyfile(**PLAIN_SUITE)
    runs: dict[str, tuple[list[str], dict[str, int], list[str]]] = {}
    for label, extra in (("with", []), ("without", ["-p", "no:trio_tradovate"])):
        listing = pytester.runpytest("-p", "no:cacheprovider", "--co", "-q", *extra)
        ran = pytester.runpytest("-p", "no:cacheprovider", "-rA", "-q", *extra)
        runs[label] = (
            [line for line in listing.outlines if "::" in line],
            ran.parseoutcomes(),
            sorted(line for line in ran.outlines if line.startswith(("PASSED", "FAILED"))),
        )
    assert runs["with"] == runs["without"]
    collected, outcomes, _ = runs["with"]
    assert len(collected) == 6
    assert outcomes == {"passed": 4, "failed": 1, "skipped": 1}
    # and the plugin really was loaded in the first run, and off in the second
    listed = pytester.runpytest("-p", "no:cacheprovider", "--fixtures")
    assert "tradovate_engine" in listed.stdout.str()
    unlisted = pytester.runpytest("-p", "no:cacheprovider", "--fixtures", "-p", "no:trio_tradovate")
    assert "tradovate_engine" not in unlisted.stdout.str()


def test_importing_the_plugin_loads_neither_the_simulator_nor_the_engine() -> None:
    code = (
        "import sys, trio_tradovate.pytest_plugin as plugin\n"
        "heavy = ['trio', 'httpx', 'trio_websocket', 'trio_tradovate.sim',"
        " 'trio_tradovate.engine', 'trio_tradovate.testing']\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
        "print(sorted(name for name in dir(plugin) if name.startswith('pytest_')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == ["[]", "['pytest_configure']"]
