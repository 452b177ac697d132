"""freeze-embed: fine-tune pretrained vision models with SGD as well as AdamW, by freezing the embedding layer.

Kumar, Shen, Bubeck, Gunasekar. How to Fine-Tune Vision Models with SGD. ICLR 2024.
"""
__version__ = "0.1.0"
