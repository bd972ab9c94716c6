"""Framework adapters (LlamaIndex, LangChain, Haystack); each imports its framework lazily."""
