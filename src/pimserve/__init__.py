"""pimserve: simulate LLM serving on heterogeneous GPU + processing-in-memory systems."""

__version__ = "0.1.0"
