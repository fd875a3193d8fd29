"""Pruning while training: coupling groups, loss-contribution scores, masks, schedule, compaction."""
