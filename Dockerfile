# sparq application image: CPU inference through llama.cpp, embeddings from the shipped MiniLM.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake git \
    tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /srv/sparq
COPY pyproject.toml README.md ./
COPY app app
COPY retrieval retrieval
COPY model model
COPY ingestion ingestion
# Pass --build-arg TORCH_INDEX_URL=<your CPU wheel index> to avoid the large CUDA build of torch.
ARG TORCH_INDEX_URL=""
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install --no-cache-dir torch==2.13.0 --index-url "$TORCH_INDEX_URL"; \
    else pip install --no-cache-dir torch==2.13.0; fi \
    && pip install --no-cache-dir -e .
RUN useradd --create-home sparq && mkdir -p /data && chown sparq /data
USER sparq
ENV SPARQ_DATA_DIR=/data HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
EXPOSE 8501 8000
# Build the embedded default model once (a no-op when it exists or another model is configured), then serve.
CMD ["sh", "-c", "sparq model build-default --if-used; exec sparq ui --address 0.0.0.0 --port 8501"]
