"""What a batch looks like: charts and exports, for pages, API and CLI alike."""
