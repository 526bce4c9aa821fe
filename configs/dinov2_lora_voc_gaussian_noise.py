# The main config tested on ImageNet-C Gaussian noise of severity 3: `tools/test.py` with it
# evaluates one corruption (training and validation stay clean). For a sweep over all
# corruptions and severities use tools/analysis_tools/test_robustness.py with the main config.
_base_ = './dinov2_lora_voc.py'
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ImageCorruption', corruption='gaussian_noise', severity=3),
    dict(type='Resize', scale=(2072, 518), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegMap', num_classes=21),
    dict(type='PackSegInputs')
]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
