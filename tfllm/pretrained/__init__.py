"""Published pretrained checkpoints: read them (GGUF, Hugging Face safetensors),
map them onto tfllm's models, and write them back in Hugging Face layout."""
