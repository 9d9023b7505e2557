"""Many mutated recipes and locks (seeded, so every failure can be replayed) through
`show-config`, `plan` and `build --until fetch --offline`: each ends in exit 0, 1 or 2 with
messages, never in an uncaught exception (a traceback)."""

from __future__ import annotations

import copy
import json
import random
import tomllib

import pytest

from appliance import cli, tools
from appliance.paths import REPO

SEED = 14
CASES = 240
ODD_VALUES = [
    None, 0, -1, 2**70, 1.5, True, "", " ", "../../etc/passwd", "/abs", "http://[::1",
    "ftp://x/", "naïve ünïcode ☃", "x" * 5000, "a\u0000b", "${var.x}", [], [1, "a"], {},
    {"x": 1}, [{}], ["cde", "noembed"], "0o777", "file:///", "http://127.0.0.1:9/",
]


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: the same escapes
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}"
                               for k, v in value.items() if v is not None) + "}"
    raise TypeError(value)


def to_toml(data: dict) -> str:
    """Everything inline under its top-level key: enough for any shape the mutations make."""
    return "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in data.items()
                   if v is not None)


def paths_of(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from paths_of(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from paths_of(v, (*prefix, i))


def mutate(data, rng: random.Random):
    """Replace, delete or add at a random place; a few times over."""
    data = copy.deepcopy(data)
    for _ in range(rng.randint(1, 3)):
        where = rng.choice([p for p in paths_of(data) if p])
        parent = data
        for step in where[:-1]:
            parent = parent[step]
        last, action = where[-1], rng.random()
        if action < 0.6:
            parent[last] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif action < 0.8 and isinstance(parent, dict):
            del parent[last]
        elif isinstance(parent, dict):
            parent[f"unknown_{rng.randint(0, 9)}"] = rng.choice(ODD_VALUES)
        else:
            parent.append(copy.deepcopy(rng.choice(ODD_VALUES)))
    return data


def mangle_text(text: str, rng: random.Random) -> str:
    """Byte-level damage: truncation, a deleted or a doubled slice, a stray character."""
    cut = rng.randrange(len(text))
    return rng.choice([text[:cut], text[:cut] + text[cut + 7:], text[:cut] + text[cut:] * 2,
                       text[:cut] + rng.choice("[]=\"'{}\\\n#") + text[cut:]])


def valid_lock(recipe) -> dict:
    from appliance.lock import Lock, Pin, identity

    pins = {"iso": Pin("iso", "CorePure64-11.1.iso", "11.1", "http://x/iso", "a" * 64,
                       "b" * 32, "md5"),
            "tcz/openssh.tcz": Pin("tcz/openssh.tcz", "openssh.tcz", "11.1", "http://x/o",
                                   "c" * 64, None, "md5")}
    return json.loads(Lock(identity(recipe), pins, ["openssh.tcz"], {}).to_json())


@pytest.fixture(scope="module")
def base():
    text = (REPO / "appliance.toml").read_text()
    from appliance import config

    return tomllib.loads(text), valid_lock(config.load([REPO / "appliance.toml"]).recipe)


def run_verbs(tmp, recipe_path, lock_path, capsys) -> list[tuple[str, int]]:
    results = []
    common = ["-c", str(recipe_path)]
    for argv in (["show-config", *common], ["plan", *common, "--lock", str(lock_path)],
                 ["build", *common, "--lock", str(lock_path), "--until", "fetch",
                  "--offline"]):
        code = cli.main(argv)  # an uncaught exception fails the test here, with its case
        _out, err = capsys.readouterr()
        assert code in (0, 1, 2) and "Traceback" not in err, (argv, code, err)
        results.append((argv[0], code))
    return results


def test_mutated_recipes_and_locks_never_end_in_a_traceback(base, tmp_path, monkeypatch,
                                                            capsys):
    for name in ("BUILD", "CACHE", "OUT"):
        monkeypatch.setenv(f"APPLIANCE_{name}", str(tmp_path / name.lower()))
    tools.tool_version.cache_clear()
    recipe_data, lock_data = base
    rng = random.Random(SEED)
    codes: dict[int, int] = {}
    for case in range(CASES):
        recipe_path, lock_path = tmp_path / f"r{case}.toml", tmp_path / f"r{case}.lock"
        kind = rng.choice(["recipe", "recipe-text", "lock", "lock-text", "both"])
        recipe_text, lock_text = to_toml(recipe_data), json.dumps(lock_data)
        if kind in ("recipe", "both"):
            recipe_text = to_toml(mutate(recipe_data, rng))
        if kind == "recipe-text":
            recipe_text = mangle_text(recipe_text, rng)
        if kind in ("lock", "both"):
            lock_text = json.dumps(mutate(lock_data, rng))
        if kind == "lock-text":
            lock_text = mangle_text(lock_text, rng)
        recipe_path.write_text(recipe_text, encoding="utf-8", errors="surrogatepass")
        lock_path.write_text(lock_text)
        try:
            for _verb, code in run_verbs(tmp_path, recipe_path, lock_path, capsys):
                codes[code] = codes.get(code, 0) + 1
        except Exception as exc:  # noqa: BLE001 - reported with the case to replay it
            pytest.fail(f"case {case} ({kind}, seed {SEED}): {type(exc).__name__}: {exc}\n"
                        f"recipe:\n{recipe_text[:2000]}\nlock:\n{lock_text[:2000]}")
    # the mutations reach past the first check: some runs fail in each way, some succeed
    assert codes.get(0) and codes.get(1) and codes.get(2), codes
