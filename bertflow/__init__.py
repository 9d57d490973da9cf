"""bertflow: raw Wikipedia dumps and books to a pretrained BERT and a table of fine-tuned results.

    bertflow run demo        # from a folder with a workflows.yaml (`bertflow init` writes one)
"""
