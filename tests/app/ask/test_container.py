"""The container: the ask's steps built once from settings and providers, nothing loaded on the way, and
the ask package free of any reference back to the Assistant."""

from __future__ import annotations

import ast
from pathlib import Path

from app.config import Settings
from app.container import AskConfig, AskContainer
from tests.app.ask.parts import ALICE, refused

ROOT = Path(__file__).resolve().parents[3]


def _container(settings: Settings, search=None, **providers) -> AskContainer:
    parts = {name: refused(name) for name in ("budgets", "llm", "loaded_llm", "encoder", "database")}
    parts.update(providers)
    return AskContainer(
        settings, search=search or refused("the searcher"), principal=refused("the principal"), **parts
    )


def test_the_pipeline_is_built_once_and_loads_nothing(tmp_path):
    container = _container(Settings(data_dir=tmp_path))
    first = container.pipeline()
    assert container.pipeline() is first


def test_a_changed_setting_takes_effect_at_the_next_ask(tmp_path):
    settings = Settings(data_dir=tmp_path, max_answer_tokens=24, ask_passages=3, pue=1.2)
    container = _container(settings)
    first = container.pipeline()
    assert (first.packer.max_answer_tokens, first.generator.max_tokens) == (24, 24)
    assert first.retriever.passages == 3 and first.meter.cost_model.pue == 1.2
    settings.max_answer_tokens = 48
    second = container.pipeline()
    assert second is not first and second.generator.max_tokens == 48 and second.retriever.passages == 3


def test_config_is_read_from_settings():
    s = Settings(query_threads=3, cpu_watts=40.0, gpu_watts=300.0, gpu=True, cloud_prices={"x": (1, 2)})
    config = AskConfig.from_settings(s)
    assert (config.query_threads, config.cpu_watts, config.gpu_watts, config.gpu) == (3, 40.0, 300.0, True)
    assert config.cost_model.cloud_prices == {"x": (1.0, 2.0)}
    assert config == AskConfig.from_settings(s)


def test_the_searchers_embedding_is_timed_for_the_retriever(tmp_path, store, embedder):
    from retrieval.search import HybridSearcher

    def search(query, *, user, k, filters):
        return searcher.search(query, principal=user, k=k, filters=filters)

    container = _container(Settings(data_dir=tmp_path), search=search)
    searcher = HybridSearcher(
        store, container.embed_timer.timed(lambda q: embedder.encode_query(q, threads=1))
    )
    try:
        retrieval = container.pipeline().retriever.run("When do passwords expire?", ALICE, None)
    finally:
        searcher.close()
    assert retrieval.hits and retrieval.timings_ms["embed"] > 0


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_ask_package_and_the_container_never_import_the_assistant():
    # `app/__init__` imports the Assistant, so sys.modules cannot tell; what each module imports can.
    modules = [*sorted((ROOT / "app" / "ask").glob("*.py")), ROOT / "app" / "container.py"]
    assert len(modules) > 10
    for module in modules:
        imported = _imports(module)
        assert not {"app.assistant", "app.Assistant"} & imported, f"{module.name} imports the Assistant"
        assert "self.assistant" not in module.read_text(), module.name
