"""Our own PyTorch Mistral/Mixtral: grouped-query attention, sliding-window attention
with a rolling KV cache, and a sparse mixture of experts. Importable on its own."""
