"""No secret from any URL is ever printed, logged, tagged or written: a real run and a real study
with a password in every URL form, then a grep of stdout, stderr, every file written, the MLflow
store and the study storage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.runtime.secrets import mask_secrets, mask_tree, remember_secrets
from tests.faults.conftest import TINY, TINY_STUDY

#: one distinct secret per URL form, so a leak names the form that leaked
FORMS = {
    "userinfo": ("postgresql://u:Sec1Alpha@db.example/x", ["Sec1Alpha"]),
    "empty user": ("postgresql://:Sec2Bravo@db.example/x", ["Sec2Bravo"]),
    "slash in password": ("postgresql://u:Sec3/Charlie@db.example/x", ["Sec3", "Charlie"]),
    "query password": ("postgresql://u@db.example/x?password=Sec4Delta", ["Sec4Delta"]),
    "at in password": ("postgresql://u:Sec5@EchoZq@db.example/x", ["Sec5", "EchoZq"]),
}
SECRETS = [s for _, words in FORMS.values() for s in words]


@pytest.mark.parametrize("form", FORMS)
def test_mask_secrets_hides_every_url_form(form):
    url, words = FORMS[form]
    masked = mask_secrets(f"error at {url}: refused")
    assert not any(w in masked for w in words), masked
    assert "db.example/x" in masked  # the rest stays readable


def test_mask_tree_hides_secret_keys_and_remembered_passwords():
    remember_secrets({"db": {"url": "mysql://u:Kx9%40pw@h/db"}})
    assert mask_secrets("driver said: password Kx9@pw rejected") == (
        "driver said: password *** rejected"
    )
    tree = mask_tree({"a": {"api_key": "abc", "uri": FORMS["userinfo"][0]}, "n": 3})
    assert tree == {"a": {"api_key": "***", "uri": "postgresql://u:***@db.example/x"}, "n": 3}


def _leaks(texts: dict[str, str], secrets: list[str]) -> list[str]:
    return [f"{where}: {s}" for where, text in texts.items() for s in secrets if s in text]


def _files(root: Path) -> dict[str, str]:
    return {
        str(p): p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file()
    }  # binary files too: SQLite pages and torch zips keep strings readable


def _quoted(key: str, value: str) -> str:
    return f"{key}='{value}'"


@pytest.mark.slow
def test_a_real_run_leaks_no_secret_anywhere(cli, tmp_path):
    urls = [url for url, _ in FORMS.values()]
    overrides = [
        _quoted("study.storage", urls[0]),
        _quoted("+tracking.tags.db", urls[1]),
        _quoted("+notify.webhook", urls[2]),  # a key no code knows about: "any future URL"
        _quoted("+notify.mirror", urls[3]),
        _quoted("+tracking.tags.replica", urls[4]),
    ]
    result = cli("run", *TINY, *overrides, f"outputs={tmp_path}")
    assert result.code == 0, result.stderr[-3000:]
    record = json.loads(result.stdout)
    texts = {"stdout": result.stdout, "stderr": result.stderr, **_files(tmp_path)}
    assert not _leaks(texts, SECRETS)
    plan = json.loads((Path(record["artifacts"]) / "plan.json").read_text())
    assert plan["meta"]["config"]["study"]["storage"] == "postgresql://u:***@db.example/x"
    assert any("mlartifacts" in f for f in texts)  # the artifact copies were grepped too


@pytest.mark.slow
@pytest.mark.postgres
def test_a_real_study_on_postgresql_leaks_no_secret_anywhere(cli, tmp_path, postgres_url):
    import sqlalchemy as sa

    # the server trusts every local connection, so any password "works"
    with sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(sa.text("CREATE DATABASE mlf"))
    host = postgres_url.split("@", 1)[1].rsplit("/", 1)[0]
    storage = f"postgresql://postgres:Sec6/Fox@{host}/pb?password=Sec7Golf"
    tracking = f"postgresql://postgres:Sec8Hotel@{host}/mlf"
    secrets = ["Sec6", "Fox", "Sec7Golf", "Sec8Hotel", *SECRETS]
    result = cli(
        "study", *TINY_STUDY, f"outputs={tmp_path}", _quoted("study.storage", storage),
        _quoted("tracking.uri", tracking), _quoted("+notify.webhook", FORMS["at in password"][0]),
        _quoted("+notify.mirror", FORMS["query password"][0]),
        timeout=900,
    )  # fmt: skip
    assert result.code == 0, result.stderr[-3000:]
    texts = {"stdout": result.stdout, "stderr": result.stderr, **_files(tmp_path)}
    for db in ("pb", "mlf"):  # every row of every table of both stores
        engine = sa.create_engine(postgres_url.rsplit("/", 1)[0] + f"/{db}")
        with engine.connect() as c:
            for table in sa.inspect(engine).get_table_names():
                rows = c.execute(sa.text(f'SELECT * FROM "{table}"')).fetchall()
                texts[f"{db}.{table}"] = repr(rows)
        engine.dispose()
    assert "mlf.params" in texts and "pb.study_user_attributes" in texts
    assert not _leaks(texts, secrets)
    assert json.loads(result.stdout)["n_complete"] == 1
