"""tfllm: TensorFlow/Keras 3 toolkit for transformer language models."""

from setuptools import find_packages, setup

LITERTLM = ["litert-lm-api==0.18.1", "litert-lm-builder==0.18.1", "litert-quantizer==0.11.0"]

setup(
    name="tfllm",
    version="0.1.0",
    description="Train, compress, export and serve transformer LMs in TensorFlow / Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["tfllm", "tfllm.*"]),
    package_data={"tfllm.data": ["bundled/*.gz", "bundled/*/*.gz", "bundled/*.md"]},
    include_package_data=True,
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<4",
        "keras-hub>=0.32,<0.33",
        "tensorflow-text>=2.21,<2.22",
        "tensorflow-model-optimization>=0.8.1,<0.9",
        "tf-keras>=2.21,<2.22",
        "tensorboard>=2.21,<2.22",
        "absl-py>=1.4",
        "ml-collections>=1.0",
        "sentencepiece>=0.2,<0.3",
        "ai-edge-litert>=2.3,<3",
        "numpy>=1.26",
        "ml-dtypes>=0.5",  # bfloat16 rounding of LiteRT's int4 block scales (export/block_grid.py)
        "matplotlib>=3.8",
        "markdown>=3.4",
        "scikit-learn>=1.5,<2",
        "gguf>=0.17,<1",  # reads and dequantizes GGUF files (tfllm-import)
        "safetensors>=0.4",  # writes Hugging Face exports (tfllm-export --format=hf)
        "jinja2>=3.1",  # renders imported instruct models' chat templates (tfllm-generate --chat)
        # tfllm-serve: the ASGI app, its server, and server-sent events (docs/serving.md)
        "starlette>=1.10,<2",
        "uvicorn>=0.54,<1",
        "sse-starlette>=3.7,<4",
    ],
    extras_require={
        # Google's LiteRT-LM engine, its bundler and LiteRT's int4/int8 weight quantizer
        # (tfllm-export --format=litertlm). Pinned: the engine finds tensors by names
        # that change between releases.
        "litertlm": LITERTLM,
        "dev": [
            *LITERTLM,
            "pytest>=8",
            "pytest-xdist>=3.5",
            "ruff>=0.6",
            "hypothesis>=6.100",
            "tokenizers>=0.20",  # the reference byte-level BPE tests compare ids against
            "httpx>=0.28",  # the HTTP client of the tfllm-serve tests and benchmark
        ],
    },
    entry_points={
        "console_scripts": [
            "tfllm-train=tfllm.cli.train:run",
            "tfllm-evaluate=tfllm.cli.evaluate:run",
            "tfllm-generate=tfllm.cli.generate:run",
            "tfllm-export=tfllm.cli.export:run",
            "tfllm-pipeline=tfllm.cli.pipeline:run",
            "tfllm-benchmark=tfllm.cli.benchmark:run",
            "tfllm-compress=tfllm.cli.compress:run",
            "tfllm-launch=tfllm.launch:run",
            "tfllm-import=tfllm.cli.import_checkpoint:run",
            "tfllm-serve=tfllm.cli.serve:run",
        ],
    },
)
