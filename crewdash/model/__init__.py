"""The record of a batch and what it is made of: crews, topics, prices."""
