"""Built-in evaluations: retrieval quality on BEIR-format sets (and, later, answer quality)."""
