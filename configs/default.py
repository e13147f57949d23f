"""Default hyper-parameters: every field of an snnjax experiment, with the reference training setup.

Experiment configs import this file and change only what differs. Override any field on the command
line, e.g. ``--config.method=slip_relu --config.levels=8``.
"""

from ml_collections import config_dict


def get_config() -> config_dict.ConfigDict:
    config = config_dict.ConfigDict()
    config.seed = 42

    # Data.
    config.dataset = "digits"  # digits | mnist
    config.data_dir = config_dict.placeholder(str)  # folder with the dataset's files; unset = tfds
    config.image_size = 224  # network input side of streamed datasets (imagenet2012)
    config.augment = ""  # comma-separated, applied in order on device: crop, flip, cutout
    config.crop_padding = 4  # random crop: zero-padding in pixels
    config.cutout_size = 16  # Cutout square side in pixels

    # Model and ANN activation.
    config.model = "small_cnn"  # tiny_cnn | small_cnn | vgg16 | resnet18 | resnet20 | resnet34 | vit
    # vit (snnjax.nn.vit.ViT, method qcfs: every activation a SignedQCFS quantizer with config.levels):
    config.vit_patch = 4  # patch side in pixels (the image side divisible by it)
    config.vit_dim = 64  # token width D
    config.vit_depth = 4  # blocks
    config.vit_heads = 4  # attention heads (D divisible by them)
    config.vit_mlp_dim = 128  # MLP hidden width
    config.method = "qcfs"  # qcfs | slip_relu | spikeconverter | threshold_relu | relu
    config.levels = 4  # L, quantization steps of QCFS / SlipReLU; SpikeConverter's window T
    config.qcfs_shift = 0.5  # φ of QCFS, in [0, 1)
    # floor_clip (the seed paper's code; converts better at low T, see snnjax.QCFSOrder) | clip_floor
    # (the revised code's gradients).
    config.qcfs_order = "floor_clip"
    config.slip_c = 0.5  # SlipReLU weight of the ReLU part, in [0, 1]
    config.slip_shift1 = 0.0  # SlipReLU shift of the ReLU part (units of λ/L)
    config.slip_shift2 = 0.5  # SlipReLU shift of the step part; also the SNN's v0
    config.threshold_init = 8.0  # initial λ of every activation layer
    config.threshold_parameterization = "identity"  # identity (reference) | softplus (λ > 0)
    config.per_channel_threshold = False  # one λ per channel instead of per layer
    config.conv_implementation = "auto"  # auto (by backend and map size) | hybrid | im2col | xla
    config.pooling = "avg"  # 2×2 pooling of ConvNets: avg (reference) | max
    # Initial weights: flax (lecun_normal kernels, zero biases) | pytorch (kernels and biases
    # U(±1/√fan_in), PyTorch's Conv2d/Linear defaults, as the reference code trains).
    config.param_init = "flax"
    # BatchNorm's running variance averages the batch variance biased (Flax) | unbiased (PyTorch, the
    # reference code: × n/(n−1)); training is the same, evaluation and BN folding read the average.
    config.bn_running_var = "biased"

    # Optimization: PyTorch SGD with coupled weight decay on all parameters, cosine per epoch.
    config.optimizer = "sgd"  # sgd (momentum, coupled decay: the reference) | adamw (decoupled decay)
    config.num_epochs = 300
    config.batch_size = 128
    # The last partial training batch of an epoch: drop (full batches only) | keep (PyTorch's
    # DataLoader default, drop_last=False: ⌈N/B⌉ steps per epoch, one more compilation for its shape).
    config.train_last_batch = "drop"
    config.eval_batch_size = 256
    config.learning_rate = 0.1
    config.momentum = 0.9
    config.weight_decay = 5e-4
    config.log_every_steps = 100  # pull metrics to the host, print and write summaries this often

    # Conversion and SNN evaluation.
    config.checkpoint = "latest"  # latest | best (highest test accuracy, as the reference keeps)
    # Convert a reference PyTorch checkpoint (.pth) instead of the workdir's Orbax one; its layout:
    # qcfs_original (SNN_conversion_QCFS, SlipReLU code) | qcfs_revised (ANN_SNN_QCFS).
    config.torch_checkpoint = config_dict.placeholder(str)
    config.torch_layout = "qcfs_revised"
    config.snn_num_steps = 32  # T: SNN accuracy is reported for every t = 1..T
    # Conversion evaluates N test images drawn uniformly (seed 0; 0 = all): a shortened run, stated in
    # the printed table and snn_eval.json ("num_test_images").
    config.test_examples = 0
    config.snn_mode = "layer"  # layer (time-batched, one scan per IF layer) | step (one scan, O(1) in T)
    config.snn_v0 = config_dict.placeholder(float)  # v(0)/θ; unset = method default (φ, shift2, ½)
    # Neuron: if | integrate_then_fire | signed_if | multi_spike_if; unset = integrate_then_fire for
    # spikeconverter, else if.
    config.snn_neuron = config_dict.placeholder(str)
    config.snn_max_pool = "avg"  # a max-pool ANN's SNN: avg (replace, reference) | max_gate (spiking gate)
    config.snn_dtype = "float32"  # float32 | bfloat16 (SNN variables, input and membranes)
    # Matmul/conv precision while converting and evaluating: highest = true float32 (GPUs would
    # otherwise use TF32 for float32 convs, which breaks exact ANN = SNN identities); default = fast.
    config.eval_precision = "highest"
    config.fold_bn = False  # fold BatchNorm into the convs before simulating
    config.balancing = "threshold"  # threshold (θ = λ) | weights (W·λ_{l-1}/λ_l, θ = 1; ConvNets, fold_bn)
    config.calibration_percentile = 99.9  # relu method: θ = this percentile of activations
    config.calibration_examples = 1024  # relu method: training images used for calibration
    # Training-free low-latency method run on the converted SNN (snnjax.conversion.low_latency, snnjax.conversion.calibration):
    # none | burst | group | cos | cos_network | srp | bias_calibration | potential_calibration |
    # step_bias_calibration. Reported against total latency (pre-run steps included).
    config.post_conversion = "none"
    config.prerun_steps = 4  # cos, cos_network: ρ; srp: τ (pre-run steps)
    config.spikes_per_step = 2  # burst: most spikes per step; group: members m (quantum θ/m)
    config.post_calibration_examples = 256  # *_calibration: training images used (never test images)
    config.post_calibration_steps = 8  # *_calibration: T the corrections are calibrated for
    config.step_bias_alpha = 0.5  # step_bias_calibration: FTBC's update step size
    # Hardware bit widths (snnjax.conversion.hardware; plain chains, fold_bn): b-bit symmetric weights on a
    # power-of-two grid per layer | channel, integer thresholds; 0 = float32. With state bits the
    # membrane is a saturating integer of that width (neuron fixed_point_if, layer mode).
    config.hardware_weight_bits = 0  # 0 | 2..16 (Speck, Xylo, Loihi 2: 8; Innatera T1: 6)
    config.hardware_weight_scale = "layer"  # layer | channel
    config.hardware_state_bits = 0  # 0 | 6..24 (Speck, Xylo: 16); needs hardware_weight_bits

    # Reports written by convert.py next to snn_eval.json.
    config.report_examples = 256  # test images for the layer-wise error and firing statistics
    config.report_steps = (4, 32)  # t at which layer errors are reported (clipped to snn_num_steps)
    config.energy_pj_per_mac = 4.6  # 45 nm, 32-bit float multiply-accumulate (Horowitz 2014)
    config.energy_pj_per_ac = 0.9  # 45 nm, 32-bit float accumulate (one synaptic operation)
    # Also write workdir/snn.nir (NIR graph; lossy: NIR's IF resets to a value, ours by subtraction).
    config.export_nir = False
    # Also write a portable SNN (jax.export StableHLO at T = snn_num_steps, symbolic batch) to this path
    # (relative = inside the workdir) plus PATH.json; snnjax.import_snn(PATH) runs it anywhere.
    config.export = config_dict.placeholder(str)
    return config
