"""The rate governor: paces calls under a provider's requests and tokens per minute."""
