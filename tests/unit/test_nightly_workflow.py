"""The nightly workflow calls only what exists: make targets, pipeline.py verbs, artifacts."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from appliance import cli
from appliance.paths import REPO

WORKFLOW = REPO / ".github" / "workflows" / "nightly.yml"
SEPARATORS = {"&&", "||", ";", "|"}
# A rule line: targets, a colon that is not part of := or ::=, no leading tab or dot-name.
_RULE = re.compile(r"^([A-Za-z0-9_-][A-Za-z0-9_. -]*?)\s*:(?![=:])")


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def commands(workflow: dict) -> list[list[str]]:
    """Every simple command of every `run:` script, as words (continuations joined)."""
    found = []
    for step in steps(workflow):
        script = step.get("run", "").replace("\\\n", " ")
        for line in script.splitlines():
            words = shlex.split(line, comments=True)
            current: list[str] = []
            for word in [*words, ";"]:
                if word in SEPARATORS:
                    if current:
                        found.append(current)
                    current = []
                else:
                    current.append(word)
    return found


def calls(workflow: dict, program: str) -> list[list[str]]:
    """The arguments of every call of `program` (by its base name)."""
    result = []
    for words in commands(workflow):
        for i, word in enumerate(words):
            if word.rsplit("/", 1)[-1] == program:
                result.append(words[i + 1:])
                break
    return result


def makefile_targets() -> set[str]:
    targets = set()
    for line in (REPO / "Makefile").read_text(encoding="utf-8").splitlines():
        match = _RULE.match(line)
        if match and "=" not in line.split(":", 1)[0]:
            targets.update(match.group(1).split())
    return targets


def test_runs_nightly_and_by_hand(workflow):
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert set(triggers) == {"schedule", "workflow_dispatch"}
    crons = [entry["cron"] for entry in triggers["schedule"]]
    assert crons and all(len(cron.split()) == 5 for cron in crons)


def test_one_job_on_a_hosted_runner_with_steps(workflow):
    jobs = workflow["jobs"]
    assert len(jobs) == 1
    job = next(iter(jobs.values()))
    assert job["runs-on"] == "ubuntu-latest"
    assert job["steps"] and all("run" in s or "uses" in s for s in job["steps"])


def test_makefile_targets_are_parsed():
    assert {"image", "venv", "deps", "test", "clean"} <= makefile_targets()
    assert "SHELL" not in makefile_targets() and ".PHONY" not in makefile_targets()


def test_every_make_target_it_calls_exists(workflow):
    made = calls(workflow, "make")
    assert made, "the workflow runs no make target"
    targets = makefile_targets()
    called = {w for args in made for w in args if "=" not in w and not w.startswith("-")}
    assert "image" in called
    assert called <= targets, f"not in the Makefile: {sorted(called - targets)}"


def test_every_pipeline_verb_it_calls_exists(workflow):
    invoked = calls(workflow, "pipeline.py")
    verbs = []
    for args in invoked:
        parsed = cli.parser().parse_args(args)  # exits (fails the test) on an unknown verb
        assert parsed.verb in cli.VERBS
        verbs.append(parsed.verb)
    assert "test-image" in verbs


def test_kvm_qemu_and_packer_from_hashicorp(workflow):
    scripts = "\n".join(step.get("run", "") for step in steps(workflow))
    assert "/etc/udev/rules.d/" in scripts and 'KERNEL=="kvm"' in scripts
    assert "https://apt.releases.hashicorp.com" in scripts
    joined = scripts.replace("\\\n", " ")  # shell line continuations
    installed = re.search(r"apt-get install .*", joined).group(0)
    assert {"packer", "qemu-system-x86", "qemu-utils"} <= set(installed.split())


def test_test_image_runs_after_make_image(workflow):
    order = [w for args in commands(workflow) for w in args
             if w in ("image", "test-image")]
    assert order.index("image") < order.index("test-image")


def test_uploads_out_and_on_failure_the_logs(workflow):
    uploads = [s for s in steps(workflow) if s.get("uses", "").startswith(
        "actions/upload-artifact@")]
    paths = {s["with"]["path"].rstrip("/"): s.get("if", "") for s in uploads}
    assert "out" in paths and "cancelled" in paths["out"]  # also after a failed test
    assert "build/logs" in paths and "failure()" in paths["build/logs"]


USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+?)@(\S+)(.*)$")


def uses_lines() -> list[tuple[str, str, str]]:
    """(action, ref, rest of the line) of every `uses:` line, comments included."""
    return [m.groups() for line in WORKFLOW.read_text(encoding="utf-8").splitlines()
            if (m := USES.match(line))]


def test_every_action_is_pinned_by_a_commit_with_its_version_in_a_comment(workflow):
    found = uses_lines()
    assert len(found) == sum(1 for s in steps(workflow) if "uses" in s) >= 3
    for action, ref, rest in found:
        assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{action}@{ref}: not a commit SHA"
        assert re.fullmatch(r"\s+#\s+v\d+(\.\d+)*\s*", rest), f"{action}: no version comment"


def test_checkout_keeps_no_credentials(workflow):
    checkouts = [s for s in steps(workflow) if s.get("uses", "").startswith("actions/checkout@")]
    assert checkouts and all(s.get("with", {}).get("persist-credentials") is False
                             for s in checkouts)


def test_a_committed_lock_is_checked_and_the_lock_used_is_uploaded(workflow):
    locks = [cli.parser().parse_args(args) for args in calls(workflow, "pipeline.py")
             if args[0] == "lock"]
    assert any(a.check for a in locks)  # a stale committed lock fails the night
    assert all(a.check or a.accept_first_use for a in locks)
    order = [w for args in commands(workflow) for w in args if w in ("--check", "image")]
    assert order.index("--check") < order.index("image")
    uploads = [s for s in steps(workflow) if s.get("uses", "").startswith(
        "actions/upload-artifact@")]
    lock_upload = [s for s in uploads if s["with"]["path"] == "appliance.lock"]
    assert lock_upload and "cancelled" in lock_upload[0].get("if", "")


def test_make_lint_checks_the_workflows():
    lint = (REPO / "Makefile").read_text(encoding="utf-8").split("\nlint:", 1)[1]
    lint = lint.split("\n\n", 1)[0]
    assert "actionlint .github/workflows/" in lint and "zizmor --offline" in lint
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert "make lint" in ci and "make test" in ci


def test_the_real_image_boots_on_every_bus_and_nic(workflow):
    """The stand-in kernel is not tc11's: the nightly job, with KVM and the real image, runs
    the whole matrix."""
    matrix = [args for args in calls(workflow, "pipeline.py") if "--matrix" in args]
    assert matrix and cli.parser().parse_args(matrix[0]).verb == "test-image"
