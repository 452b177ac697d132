"""Fine-tune a pretrained vision backbone: ``python train.py fit --config configs/demo.yaml``."""
from freeze_embed.run.cli import main

if __name__ == "__main__":
    main()
