"""The OPTIMADE loader against the optimade package's reference server on localhost (offline)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from cosynth.data.optimade import entries_to_table, load_optimade

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def optimade_server(tmp_path_factory):
    """Reference server (mongomock backend, bundled test structures) in a subprocess."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    config = tmp_path_factory.mktemp("optimade") / "config.json"
    # the bundled test data uses Materials-Project-style field names; map them as the package's tests do
    config.write_text(json.dumps({
        "base_url": url, "insert_test_data": True, "database_backend": "mongomock",
        "aliases": {"structures": {"id": "task_id", "chemical_formula_reduced": "pretty_formula",
                                   "chemical_formula_anonymous": "formula_anonymous"}},
    }))
    env = {**os.environ, "OPTIMADE_CONFIG_FILE": str(config)}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "optimade.server.main:app", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/v1/info", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"OPTIMADE server exited: {proc.stderr.read().decode()[-2000:]}")
            if time.time() > deadline:
                raise RuntimeError("OPTIMADE server did not start within 90 s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _server_entries(url, query=""):
    with urllib.request.urlopen(f"{url}/v1/structures?page_limit=100{query}") as r:
        return json.load(r)["data"]


def test_every_entry_becomes_a_row_or_an_error(optimade_server):
    table = load_optimade(optimade_server, "", max_results=100)
    served = _server_entries(optimade_server)
    assert len(served) == 17
    assert sorted(table.frame["id"].tolist() + table.errors["id"].tolist()) == sorted(e["id"] for e in served)
    assert len(table) >= 1 and (table.errors["error"].str.len() > 10).all()
    by_id = {e["id"]: e["attributes"] for e in served}
    for rid, formula, s in zip(table.frame["id"], table.frame["formula"], table.structures()):
        attrs = by_id[rid]
        assert s.composition.reduced_formula == formula
        assert np.allclose(s.lattice.matrix, attrs["lattice_vectors"], atol=1e-6)
        assert len(s) == attrs["nsites"]
    assert set(table.frame["source"]) == {"optimade"}


def test_filter_and_limit_are_passed_to_the_server(optimade_server):
    table = load_optimade(optimade_server, 'elements HAS "Ag"', max_results=100)
    served = _server_entries(optimade_server, "&filter=elements%20HAS%20%22Ag%22")
    assert 0 < len(served) < 17
    assert sorted(table.frame["id"].tolist() + table.errors["id"].tolist()) == sorted(e["id"] for e in served)
    assert all("Ag" in f for f in table.frame["formula"])
    limited = load_optimade(optimade_server, "", max_results=3)
    assert len(limited) + len(limited.errors) == 3


def test_bad_filter_is_a_clear_error(optimade_server):
    with pytest.raises(RuntimeError, match="not a known or searchable quantity"):
        load_optimade(optimade_server, 'elemments HAS "Si"')


def test_entries_that_are_not_crystals_are_errors():
    cubic = {"lattice_vectors": [[3, 0, 0], [0, 3, 0], [0, 0, 3]], "cartesian_site_positions": [[0, 0, 0]],
             "species_at_sites": ["Cu"], "species": [{"name": "Cu", "chemical_symbols": ["Cu"], "concentration": [1.0]}],
             "dimension_types": [1, 1, 1], "chemical_formula_reduced": "Cu"}
    slab = {**cubic, "dimension_types": [1, 1, 0]}
    unknown = {**cubic, "species": [{"name": "Cu", "chemical_symbols": ["X"], "concentration": [1.0]}]}
    table = entries_to_table([{"id": "a", "attributes": cubic}, {"id": "b", "attributes": slab},
                              {"id": "c", "attributes": unknown}, {"id": "d", "attributes": {}}])
    assert table.frame["id"].tolist() == ["a"]
    errors = dict(zip(table.errors["id"], table.errors["error"]))
    assert "dimension_types=[1, 1, 0]" in errors["b"] and "unknown element" in errors["c"]
    assert "lacks lattice_vectors" in errors["d"]
