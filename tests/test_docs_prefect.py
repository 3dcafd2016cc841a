"""The orchestration docs describe prefect.yaml as it is: every deployment, their number, and
the one process work pool they run on (pure: reads files)."""

from __future__ import annotations

import re

import yaml

from petsml.testing.project import REPO

NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


def _prefect():
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


def _docs() -> dict[str, str]:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return {page.name: page.read_text() for page in pages}


def process_pools_named(text: str) -> set[str]:
    """Work pools a text creates as process pools or starts workers on, minus other kinds'."""
    created = dict(re.findall(r"work-pool create ([\w-]+) --type (\w+)", text))
    started = set(re.findall(r"--pool ([\w-]+)", text)) | set(
        re.findall(r"work pool (pets-[\w-]+)", text)
    )
    other_kinds = {name for name, kind in created.items() if kind != "process"}
    return {n for n, k in created.items() if k == "process"} | (started - other_kinds)


def test_orchestration_names_every_deployment_and_counts_them():
    names = [d["name"] for d in _prefect()["deployments"]]
    text = (REPO / "docs" / "ORCHESTRATION.md").read_text()
    for name in names:
        assert f"/{name}`" in text, f"docs/ORCHESTRATION.md does not name deployment {name}"
    counted = re.findall(r"defines (\w+) deployments", text)
    assert counted, "docs/ORCHESTRATION.md no longer says how many deployments prefect.yaml has"
    assert {NUMBERS.get(word) for word in counted} == {len(names)}, counted


def test_every_doc_names_the_work_pool_of_prefect_yaml():
    (pool,) = {d["work_pool"]["name"] for d in _prefect()["deployments"]}
    for page, text in _docs().items():
        named = process_pools_named(text) - {"pets-docker", "pets-k8s"}
        assert named <= {pool}, f"{page} names work pool(s) {sorted(named - {pool})}, not {pool}"


def test_the_pool_check_sees_a_wrong_name():
    text = "prefect work-pool create pets-pool --type process\nprefect worker start --pool x"
    assert process_pools_named(text) == {"pets-pool", "x"}
    assert process_pools_named("prefect work-pool create pets-k8s --type kubernetes") == set()
