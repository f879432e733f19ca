# The image the Kubernetes manifests run (deploy/kubernetes). On a GPU node, torch from PyPI
# brings its CUDA libraries; the same pins as the rest of the project.
FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt pyproject.toml ./
RUN pip install --no-cache-dir torch==2.13.0 && pip install --no-cache-dir -r requirements.txt
COPY fleetserve ./fleetserve
COPY models ./models
RUN pip install --no-cache-dir --no-deps -e .
EXPOSE 8000 8100
ENTRYPOINT []
