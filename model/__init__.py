"""sparq's model layer: engines behind one interface, expert accounting, the embedded MoE default."""

from model.base import (
    ContextTooLong,
    Generation,
    GenerationStats,
    LLMEngine,
    ModelError,
    ModelInfo,
    ModelNotFound,
    RemoteEngineError,
    UnsupportedArchitecture,
)
from model.factory import create_engine, engine_from_env

__all__ = [
    "ContextTooLong",
    "Generation",
    "GenerationStats",
    "LLMEngine",
    "ModelError",
    "ModelInfo",
    "ModelNotFound",
    "RemoteEngineError",
    "UnsupportedArchitecture",
    "create_engine",
    "engine_from_env",
]
