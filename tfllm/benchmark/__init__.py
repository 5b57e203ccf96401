"""Training and decoding speed benchmarks (`tfllm-benchmark`, DESIGN §2).

Everything runs on random token ids, so a benchmark needs no data set,
tokenizer or downloaded weights: only the model dimensions of a config.
"""
