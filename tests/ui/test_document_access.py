"""What the web app shows a signed-in user of the documents (app.ui.document_access): the retrieval access
rule on a real store (SQLite, or PostgreSQL with SPARQ_TEST_DATABASE=postgresql) with documents ingested by
the real pipeline."""

from __future__ import annotations

import pytest

from app.ui.document_access import display_paths, readable_collections, readable_document, source_file
from tests.ui.conftest import DOCS


@pytest.fixture
def shared(assistant, docs_dir, tmp_path):
    """`hr` shared with staff, `legal` with contractors; alice is staff, mallory a contractor."""
    assistant.ingest(docs_dir, collection="hr", groups=["staff"])
    legal = tmp_path / "legal"
    (legal / "contracts").mkdir(parents=True)
    (legal / "contracts" / "nda.md").write_text("# NDA\n\nWhat is said here stays here.\n")
    assistant.ingest(legal, collection="legal", groups=["contractors"])
    assistant.users.add("alice", groups=["staff"], password="alice-pass-123")
    assistant.users.add("mallory", groups=["contractors"], password="mallory-pass-1")
    assistant.users.add("root", role="admin", password="root-pass-1234")
    return assistant


def _ids(assistant) -> dict[str, int]:
    return {d.path.rsplit("/", 1)[-1]: d.id for d in assistant.documents()}


def test_source_downloads_follow_the_retrieval_access_rule(shared):
    ids = _ids(shared)
    alice, mallory, root = (shared.users.get(n) for n in ("alice", "mallory", "root"))
    path, mime = source_file(shared.store, alice, ids["policy.md"])
    assert path.read_text() == DOCS["policy.md"] and mime
    assert source_file(shared.store, root, ids["policy.md"]) is not None
    assert source_file(shared.store, mallory, ids["policy.md"]) is None
    assert source_file(shared.store, alice, 10**9) is None


def test_a_readable_document_whose_file_is_gone_is_no_download(shared, docs_dir):
    ids = _ids(shared)
    alice = shared.users.get("alice")
    (docs_dir / "it.md").unlink()
    assert readable_document(shared.store, alice, ids["it.md"]) is not None
    assert source_file(shared.store, alice, ids["it.md"]) is None


def test_only_collections_with_a_readable_document_are_named(shared):
    alice, mallory, root = (shared.users.get(n) for n in ("alice", "mallory", "root"))
    assert readable_collections(shared.store, alice) == ["hr"]
    assert readable_collections(shared.store, mallory) == ["legal"]
    assert readable_collections(shared.store, root) == ["hr", "legal"]


def test_readers_see_collection_relative_paths_of_what_they_may_read(shared):
    ids = _ids(shared)
    alice, root = shared.users.get("alice"), shared.users.get("root")
    data_dir = shared.settings.data_dir
    wanted = [ids["policy.md"], ids["it.md"], ids["nda.md"]]
    assert display_paths(shared.store, data_dir, alice, wanted) == {
        ids["policy.md"]: "policy.md",
        ids["it.md"]: "it.md",
    }
    shown = display_paths(shared.store, data_dir, root, wanted)
    assert shown[ids["nda.md"]] == "nda.md"  # the only document of its folder: named by itself
    assert not any(str(shared.settings.data_dir) in p or p.startswith("/") for p in shown.values())
    assert display_paths(shared.store, data_dir, alice, []) == {}
