"""Upper bounds on the sizes users give (recipe numbers, `synthetic:N`, CLI flags), in one place.

Each is far beyond any real run, yet low enough that a typo cannot ask for terabytes of memory,
millions of layers or centuries of training: the value is refused with a one-line error instead.
The README lists them ("Recipe numbers"). No imports: the CLI reads them when it defines its flags.
"""

MAX_CROP = 1024  # template_size, search_size (px): recipes, `flops --template-size/--search-size`
MAX_IMAGE_INPUT = 2048  # `flops --input-size` (px) for image models
MAX_CONTEXT = 32.0  # template_factor, search_factor (crop side / target size)
MAX_EPOCHS = 100_000  # epochs, m, |schedule offset|, schedule steps
MAX_SAMPLES = 100_000_000  # samples_per_epoch
MAX_STEPS = 1_000_000_000  # warmup_steps, checkpoint_every
MAX_BATCH = 4096  # batch_size (per process)
MAX_WORKERS = 256  # data loader workers
MAX_THREADS = 1024  # threads, latency_threads, `--threads`
MAX_LAYERS = 1024  # layer indices, keep, attention_layers
MAX_WEIGHT = 1e6  # loss weights, grad_clip
MAX_SCALE = 1000.0  # backbone_lr_scale, lr_drop_factor
MAX_LR = 10.0  # lr, weight_decay
MAX_MLP_RATIO = 64.0  # a width stage's target mlp_ratio
MAX_GAP = 1_000_000  # frames between template and search (max_gap)
MAX_CENTER_JITTER, MAX_SCALE_JITTER = 50.0, 4.0
MAX_BRIGHTNESS = 10.0  # augment brightness: pixel factors drawn from [max(0, 1 - it), 1 + it]
MAX_SEQUENCES, MAX_LENGTH = 100_000, 100_000  # synthetic data: sequences (also `synthetic:N`), frames each
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 64, 4096  # synthetic data: image_size (px per side)
MAX_SEED = 2**32 - 1  # `prune --seed` (numpy's range)
MAX_ITERS = 100_000  # `flops --latency --iters`
MAX_RECIPE_CHARS = 1_000_000  # a recipe file (the shipped ones have about 5,000)
# model config values a recipe overrides (MixFormerV2Config), and the size of a stage's model
MAX_WIDTH = 16_384  # embed_dim, num_heads, mlp_hidden entries, head_hidden, corner_channel, bins
MAX_TEMPLATES = 16  # num_online_templates
MAX_CLASSES = 100_000  # legacy_num_classes
MAX_MODEL_PARAMS = 2**32  # backbone parameters, roughly counted from the config (MixFormerV2-B: 0.06e9)
