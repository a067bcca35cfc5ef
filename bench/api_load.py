"""A bounded load test of the HTTP API on loopback, next to the same questions through the Python API.

    python bench/api_load.py [--clients 16] [--requests 3] [--database-url URL] [--json FILE]

It builds a fresh data dir (two groups' documents, three users with keys), starts the real `sparq serve`
on a free 127.0.0.1 port with the small SmolLM2 model, and then:
1. asks and searches the same questions through `Assistant` in this process, one at a time (baseline);
2. sends them through HTTP one at a time (the HTTP overhead is the ratio of the two means);
3. runs CLIENTS threads, each sending REQUESTS chat or search requests as an employee of one group,
   while an admin uploads documents through `POST /v1/documents`.
Checks: no 5xx, no passage of another group in any answer, citation or hit, every chat's query id in the
query log exactly once. Prints p50/p95 latency and throughput, writes JSON; exits 1 when a check fails.
Only loopback traffic; a fixed number of requests; it stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GROUP_DOCS = {
    "hr": (
        "people",
        [
            "The parental leave allowance is twenty-six weeks of full pay.",
            "Payroll closes on the 25th of every month at noon.",
            "The HR-SECRET-ORCHID bonus pool is three percent of salaries.",
        ],
    ),
    "eng": (
        "engineering",
        [
            "The build farm runs nightly at 02:00 on the blue cluster.",
            "Production deploys need two approvals in the review tool.",
            "The ENG-SECRET-BASALT staging password rotates weekly.",
        ],
    ),
}
MARKERS = {"hr": "HR-SECRET-ORCHID", "eng": "ENG-SECRET-BASALT"}
QUESTIONS = {
    "hr": ["How long is parental leave?", "When does payroll close?", "How big is the bonus pool?"],
    "eng": [
        "When does the build farm run?",
        "How many approvals do deploys need?",
        "How often does the staging password rotate?",
    ],
}
USERS = {"alice": "hr", "bob": "eng"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def prepare(work: Path, database_url: str | None) -> dict:
    """Documents of both groups, users and keys in a new data dir; returns what the load needs."""
    from app.api_keys import ApiKeys
    from app.assistant import Assistant
    from app.config import Settings

    settings = Settings(data_dir=work / "data", database_url=database_url)
    with Assistant(settings) as assistant:
        for group, (collection, facts) in GROUP_DOCS.items():
            folder = work / "share" / group
            folder.mkdir(parents=True)
            for i, fact in enumerate(facts):
                (folder / f"{group}-{i}.md").write_text(f"# Note {i}\n\n{fact}\n")
            assistant.ingest(folder, collection=collection, groups=[group])
        keys = ApiKeys(assistant.engine, assistant.users)
        made = {}
        for name, group in USERS.items():
            assistant.users.add(name, groups=[group])
            made[name] = keys.create(name, name="load")[1]
        assistant.users.add("root", role="admin")
        made["root"] = keys.create("root", name="load")[1]
    return {"settings": settings, "keys": made}


def _env(settings, model_path: str, max_tokens: int) -> dict[str, str]:
    env = {
        **os.environ,
        "SPARQ_DATA_DIR": str(settings.data_dir),
        "SPARQ_LLM_MODEL": model_path,
        "SPARQ_LLM_CONTEXT_WINDOW": "2048",
        "SPARQ_MAX_ANSWER_TOKENS": str(max_tokens),
        "SPARQ_API_RATE_LIMIT_PER_MINUTE": "100000",
        "SPARQ_API_QUEUE_TIMEOUT_S": "900",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if settings.database_url is not None:
        env["SPARQ_DATABASE_URL"] = settings.resolved_database_url
    return env


def start_server(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = open(log_path, "wb")  # noqa: SIM115 - closed when the server is stopped
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sparq serve exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("sparq serve did not become healthy within 300 s")


def _leaks(user: str, body: dict) -> int:
    """Passages of a group the user does not belong to, anywhere in a response."""
    foreign = [m for g, m in MARKERS.items() if g != USERS[user]]
    text = json.dumps(body, ensure_ascii=False)
    return sum(text.count(m) for m in foreign)


def _request(client: httpx.Client, base: str, key: str, kind: str, question: str) -> tuple[int, float, dict]:
    headers = {"Authorization": f"Bearer {key}"}
    started = time.perf_counter()
    if kind == "chat":
        r = client.post(
            f"{base}/v1/chat/completions",
            headers=headers,
            timeout=900,
            json={"model": "sparq", "messages": [{"role": "user", "content": question}]},
        )
    else:
        r = client.post(f"{base}/v1/search", headers=headers, timeout=900, json={"query": question, "k": 5})
    elapsed = time.perf_counter() - started
    try:
        body = r.json()
    except ValueError:
        body = {"raw": r.text[:500]}
    return r.status_code, elapsed, body


def _workload(n: int) -> list[tuple[str, str, str]]:
    """(user, kind, question) in a fixed order: both users, chat and search alternating."""
    out = []
    for i in range(n):
        user = "alice" if i % 2 == 0 else "bob"
        qs = QUESTIONS[USERS[user]]
        out.append((user, "chat" if (i // 2) % 2 == 0 else "search", qs[(i // 4) % len(qs)]))
    return out


def run(clients: int, requests_per_client: int, database_url: str | None, max_tokens: int) -> dict:
    from app.assistant import Assistant
    from model.moe.source_weights import smollm2_path

    model_path = str(smollm2_path())
    with tempfile.TemporaryDirectory(prefix="sparq-api-load-") as tmp:
        work = Path(tmp)
        prepared = prepare(work, database_url)
        settings, keys = prepared["settings"], prepared["keys"]
        sequence = _workload(8)

        # 1. The Python API, in this process, one question at a time.
        python_s: dict[str, list[float]] = {"chat": [], "search": []}
        with Assistant(
            settings.model_copy(
                update={"llm_model": model_path, "llm_context_window": 2048, "max_answer_tokens": max_tokens}
            )
        ) as assistant:
            assistant.ask("warm up", user="alice")
            for user, kind, question in sequence:
                t = time.perf_counter()
                if kind == "chat":
                    assistant.ask(question, user=user)
                else:
                    assistant.search(question, user=user, k=5)
                python_s[kind].append(time.perf_counter() - t)

        proc, base = start_server(_env(settings, model_path, max_tokens), work / "server.log")
        try:
            with httpx.Client() as client:
                _request(client, base, keys["alice"], "chat", "warm up")
                # 2. The same questions through HTTP, one at a time.
                http_s: dict[str, list[float]] = {"chat": [], "search": []}
                for user, kind, question in sequence:
                    status, elapsed, _ = _request(client, base, keys[user], kind, question)
                    if status != 200:
                        raise RuntimeError(f"sequential {kind} answered {status}")
                    http_s[kind].append(elapsed)

                # 3. Concurrent clients while an admin uploads.
                results: list[tuple[str, str, int, float, dict]] = []
                lock = threading.Lock()
                uploads: list[int] = []

                def client_thread(index: int) -> None:
                    with httpx.Client() as own:
                        for j, (user, kind, question) in enumerate(_workload(requests_per_client * clients)):
                            if j % clients != index:
                                continue
                            status, elapsed, body = _request(own, base, keys[user], kind, question)
                            with lock:
                                results.append((user, kind, status, elapsed, body))

                def uploader() -> None:
                    with httpx.Client() as own:
                        for i in range(3):
                            files = {
                                "files": (
                                    f"upload-{i}.md",
                                    f"# Upload {i}\n\nHR-SECRET-ORCHID rule {i}.\n".encode(),
                                )
                            }
                            r = own.post(
                                f"{base}/v1/documents",
                                headers={"Authorization": f"Bearer {keys['root']}"},
                                files=files,
                                data={"collection": "people", "groups": "hr"},
                                timeout=900,
                            )
                            uploads.append(r.status_code)

                threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(clients)]
                threads.append(threading.Thread(target=uploader))
                started = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                wall = time.perf_counter() - started
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

        # The query log: each chat answered is one row, found exactly once by its id.
        from sqlalchemy import select
        from sqlalchemy.orm import Session

        from app.database import open_database
        from app.models import QueryLog

        engine = open_database(settings.resolved_database_url)
        with Session(engine) as session:
            logged = Counter(session.scalars(select(QueryLog.id)))
        engine.dispose()
        chat_ids = [
            b.get("sparq", {}).get("query_id") for _, k, s, _, b in results if k == "chat" and s == 200
        ]
        statuses = Counter(s for _, _, s, _, _ in results)
        by_kind = {k: [e for _, kk, s, e, _ in results if kk == k and s == 200] for k in ("chat", "search")}
        report = {
            "machine": f"{os.cpu_count()} cores",
            "clients": clients,
            "requests": len(results),
            "max_answer_tokens": max_tokens,
            "status_counts": {str(k): v for k, v in sorted(statuses.items())},
            "server_errors": sum(v for k, v in statuses.items() if k >= 500),
            "cross_group_passages": sum(_leaks(u, b) for u, _, _, _, b in results),
            "uploads": uploads,
            "chat_ids_logged_once": all(logged.get(i) == 1 for i in chat_ids)
            and len(set(chat_ids)) == len(chat_ids),
            "wall_seconds": round(wall, 2),
            "throughput_rps": round(len(results) / wall, 3) if wall else 0.0,
            "concurrent": {
                k: {"n": len(v), "p50_s": round(_pct(v, 0.5), 3), "p95_s": round(_pct(v, 0.95), 3)}
                for k, v in by_kind.items()
            },
            "sequential_http_mean_s": {k: round(statistics.mean(v), 4) for k, v in http_s.items()},
            "python_api_mean_s": {k: round(statistics.mean(v), 4) for k, v in python_s.items()},
            "http_overhead_ratio": {
                k: round(statistics.mean(http_s[k]) / statistics.mean(python_s[k]), 3) for k in http_s
            },
        }
        report["ok"] = (
            report["server_errors"] == 0
            and report["cross_group_passages"] == 0
            and report["chat_ids_logged_once"]
            and all(u == 200 for u in uploads)
        )
        return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=3, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary data dir")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "api_load.json")
    args = parser.parse_args()
    report = run(args.clients, args.requests, args.database_url, args.max_tokens)
    print(json.dumps(report, indent=2))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    raise SystemExit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
