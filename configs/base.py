"""Defaults shared by every config. `get_config()` returns an ml_collections ConfigDict;
entry points load it with `--config=configs/<file>.py[:variant]` and lock it, so an override
of a key that does not exist (`--config.trian.lr=...`) is an error, not a silent no-op."""

import ml_collections

from configs.pools import MMLU_9


def get_config():
    c = ml_collections.ConfigDict()
    c.run_name = "mmlu"
    c.output_root = "checkpoints"  # outputs go to <output_root>/<run_name>/
    c.job = "baselines"  # score.py jobs: baselines | route | add_expert | experts
    c.checkpoint = ""  # route / add_expert: a training run's directory (checkpoints/<run_name>)

    # Device mesh: -1 fills the devices left. Batches split over data x fsdp; the backbone's
    # weights over fsdp (embed dims) and tensor (heads, mlp) by sharding.LOGICAL_AXIS_RULES.
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))

    # Multi-host: a process that stops sending heartbeats for heartbeat_timeout_s (killed,
    # preempted, its host gone) makes every other process abort (non-zero exit) instead of
    # waiting in a collective forever; rerun the command to resume from the last checkpoint.
    # shutdown_timeout_s bounds the wait for the others at a normal exit.
    c.distributed = ml_collections.ConfigDict(dict(heartbeat_timeout_s=100, shutdown_timeout_s=300))

    # python -m leeroo_jax.plan: the target a memory/time plan is for (leeroo_jax/planning/spec.py:
    # chip presets; 0 / "" = the chip's or the run's own value)
    c.plan = ml_collections.ConfigDict(dict(chip="v5e", devices=0, mfu=0.4, hbm_gib=0.0, peak_tflops=0.0, kv_batch=0,
                                            kv_len=2048, compute_dtype="", param_dtype="", compile=True))

    c.data = ml_collections.ConfigDict()
    c.data.source = "vendored"  # "vendored", a .jsonl(.gz) file, a Berkeley CSV dir, or "cais/mmlu"
    c.data.outcomes = "vendored"  # graded outcomes CSV; "vendored" = leeroo_jax/data/assets/outcomes.csv.gz
    c.data.extra_experts = "error"  # outcomes of experts outside config.pool: "error" | "skip" (train on a sub-pool)
    c.data.records = ""  # the record store; "" = <output_root>/<run_name>/records (the CSV is imported on first use)
    c.data.probes = ""  # JSON {expert: [question ids]}: only these outcomes of those experts are known (add_expert)

    c.pool = [dict(e) for e in MMLU_9]

    c.backbone = ml_collections.ConfigDict()
    c.backbone.path = "minilm"  # "minilm", "smollm2" (the fetched real weights), an HF dir or a hub id
    c.backbone.pooling = "mean"  # mean | cls | last
    c.backbone.max_length = 256
    c.backbone.batch_size = 16  # small sorted batches pad least (bench/encode.py)

    # score.py --config.job=route: route questions with a trained run (config.checkpoint)
    c.route = ml_collections.ConfigDict()
    c.route.questions = ""  # "" = the run's eval split; else a .jsonl(.gz), a Berkeley CSV dir or cais/mmlu
    c.route.mode = "batch_budget"  # cap | tradeoff | batch_budget | quality (orchestrator/select.py)
    c.route.value = "weak"  # a number (USD cap / mean USD budget, lam, or tau) or "weak" / "strong": that expert's mean cost
    c.route.calibrate_on = ""  # "val": value is a target mean cost; fit the tradeoff lam / quality tau on VAL to meet it
    c.route.output = ""  # "" = <checkpoint>/route

    # score.py --config.job=experts: the pool's live experts answer questions into the record store
    c.experts = ml_collections.ConfigDict()
    c.experts.questions = ""  # "" = config.data.source; train | val | test = that split; or a question source
    c.experts.limit = 0  # the first N selected questions in id order (0 = all)
    c.experts.batch_size = 16  # rows per batch (fewer for long prompts: max_tokens)
    c.experts.max_tokens = 2048  # rows x padded length per batch
    c.experts.max_new_tokens = 16  # chat recipe: reply length cap

    # selfplay.py: rounds of (explore -> call -> grade -> record -> retrain); see jobs/selfplay.py
    c.selfplay = ml_collections.ConfigDict()
    c.selfplay.rounds = 8
    c.selfplay.start_fraction = 0.05  # TRAIN questions whose outcomes are all known at round 0
    c.selfplay.calls_per_round = 0.03125  # < 1: share of the bank's recorded (question, expert) pairs; else a count
    c.selfplay.usd_per_round = 1.0  # dollars a round may spend on calls (at list price)
    c.selfplay.strategy = "thompson"  # thompson | uncertainty | uniform (orchestrator/explore.py)
    c.selfplay.samples = 8  # MC-dropout draws of p per round
    c.selfplay.steps = 200  # training steps per round
    c.selfplay.warm_start = False  # start each round from the previous round's head (else from scratch; see README)
    c.selfplay.seed = 0
    c.selfplay.source = "bank"  # bank: TRAIN questions with withheld outcomes | generator: a live expert writes new ones
    c.selfplay.generator = ""  # source=generator: the live pool expert that writes questions
    c.selfplay.generate_subjects = ()  # () = every subject
    c.selfplay.generate_per_subject = 2  # requests per subject per round
    c.selfplay.generate_tokens = 96  # reply length cap
    c.selfplay.judge = "weighted_majority"  # grades generated questions (experts/judge.py)
    c.selfplay.judge_generator_vote = True  # the generator's claimed answer is one more voter
    c.selfplay.judge_prior_accuracy = 0.5  # a voter's accuracy before it has 10 gold-graded TRAIN answers
    c.selfplay.benchmark = False  # run the bandit benchmark instead (jobs/bandit.py): strategy vs uniform
    c.selfplay.bench_seeds = 3

    # score.py --config.job=add_expert: grow a trained run's pool (orchestrator/add_expert.py)
    c.add_expert = ml_collections.ConfigDict()
    c.add_expert.probes = 50  # K graded TRAIN questions per new expert
    c.add_expert.seed = 0
    c.add_expert.l2 = 0.01  # pull of the new row toward the mean expert row
    c.add_expert.run_name = ""  # "" = <checkpoint's run_name>+<number added>

    c.eval = ml_collections.ConfigDict()
    c.eval.split = "test"  # test | val
    c.eval.weak = "mistralai/Mixtral-8x7B-Instruct-v0.1"  # APGR/CPT pair and the "at cost of" expert
    c.eval.strong = "gpt-4-1106-preview"  # and the "cost to reach the accuracy of" expert
    c.eval.knn_ks = (20, 100)
    c.eval.subject_strength = 20.0
    c.eval.policy_folds = 5  # the deployment policy also decides on TRAIN's out-of-fold predictions (frozen mode; 0 = VAL only)

    # The orchestrator (train.py). Chosen on VAL; see README.
    c.train = ml_collections.ConfigDict()
    c.train.mode = "frozen"  # frozen (cached embeddings, head only) | last_k | full (backbone in the step)
    c.train.last_k = 2  # last_k mode: how many top backbone layers learn
    c.train.backbone_lr_scale = 0.05  # backbone lr = this x lr (fine-tuning modes)
    c.train.layer_decay = 1.0  # and x layer_decay per layer below the top
    c.train.init_head_from = ""  # a run directory whose best head starts this run (fine-tuning after frozen)
    c.train.accumulate = 1  # gradient accumulation: optimizer updates every `accumulate` steps
    c.train.seed = 0
    # The head's recipe: steps, dropout and weight decay won the out-of-fold sweep (jobs/tune.py) on
    # three of the four pools of the README (9 experts, GPT-4 at a tenth, the 7 open models).
    c.train.steps = 600
    c.train.batch_size = 256
    c.train.lr = 1e-3
    c.train.warmup_steps = 20
    c.train.weight_decay = 0.3
    c.train.clip_norm = 1.0
    c.train.hidden = 64
    c.train.dropout = 0.5
    c.train.soft_weight = 0.0  # blend of the soft label (gold-letter probability) into the target
    c.train.side_knn = (20, 100)  # retrieval side features: neighbours' outcomes at these k
    c.train.side_prior = True  # the subject prior as a side feature
    c.train.ensemble = 1  # M > 1: M heads from M initialisations, averaged in p (orchestrator/model.py)
    c.train.anchor = ""  # "" = a free head; prior | knn<k>: logits start at that side feature (orchestrator/model.py)
    c.train.tune = False  # sweep head settings on held-out questions first, train the winner (jobs/tune.py)
    c.train.tune_min_val = 1000  # VAL questions graded by every expert needed to tune on VAL; else k-fold on TRAIN
    c.train.tune_folds = 5
    c.train.calibration = "platt"  # none | platt | isotonic: per-expert map of p fitted on VAL (orchestrator/pcal.py)
    c.train.log_every = 25
    c.train.eval_every = 50
    c.train.keep = 2  # checkpoints kept besides the best by VAL AIQ
    c.train.fault_at_step = 0  # tests only: SIGKILL the process right after this step (0 = never)
    c.train.fault_process = -1  # tests only: which process fault_at_step kills (-1 = every process)
    return c


def drop_expert(c, name: str):
    """c without expert `name` in its pool (its recorded outcomes skipped): the sub-pool that
    add_expert experiments train on before adding `name` back."""
    c.pool = [e for e in c.pool if e["name"] != name]
    c.data.extra_experts = "skip"
    return c
