"""The convert stage: listing the clips, probing, WebM encoding and its parity proof."""
