"""Tiny Keras 3 models, one per layer family, written by the tests with real Keras (torch backend).

Each builder takes the ``keras`` module and returns ``(model, inputs)``: a
model with random weights (biases and batch-norm statistics included, so that
every array's layout matters) and a batch of inputs to compare predictions on.
"""
from __future__ import annotations

import numpy as np


def randomize(model, seed: int = 0):
    """Every weight random: moving variances positive, the rest small normals."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for weight in layer.weights:
            shape = tuple(weight.shape)
            if "variance" in weight.path:
                values.append(rng.uniform(0.5, 1.5, shape))
            else:
                values.append(rng.normal(0.0, 0.3, shape))
        if values:
            layer.set_weights([v.astype("float32") for v in values])
    return model


def images(shape, seed: int = 1, batch: int = 3):
    return np.random.default_rng(seed).normal(size=(batch, *shape)).astype("float32")


def dense_mlp(keras):
    L = keras.layers
    model = keras.Sequential([keras.Input((6,)), L.Dense(5, activation="relu"), L.Dropout(0.3),
                              L.Dense(4, use_bias=False, activation="tanh"), L.Dense(3, activation="softmax")])
    return model, images((6,))


def conv_flatten_dense(keras):
    L = keras.layers
    model = keras.Sequential([keras.Input((8, 7, 2)), L.Conv2D(3, 3, activation="relu"), L.MaxPooling2D(2),
                              L.Flatten(), L.Dense(4)])
    return model, images((8, 7, 2))


def conv2d_padding(keras):
    L = keras.layers
    inp = keras.Input((8, 7, 3))
    x = L.Conv2D(4, 3, strides=2, padding="same")(inp)              # 8x7 -> 4x4: pads (0, 1) on both axes
    y = L.Conv2D(4, 3, strides=2, padding="same", use_bias=False)(L.ZeroPadding2D(((0, 0), (1, 0)))(inp))
    x = L.Concatenate()([x, y])                                     # channels, in the channels-first layout
    x = L.Conv2D(4, (3, 2), dilation_rate=2, padding="same", groups=2, activation="elu")(x)
    x = L.Conv2D(2, 1, activation="softmax")(x)                     # softmax over channels (Keras's last axis)
    return keras.Model(inp, x), images((8, 7, 3))


def conv1d_pooling(keras):
    L = keras.layers
    model = keras.Sequential([
        keras.Input((13, 3)), L.Conv1D(4, 3, padding="causal", dilation_rate=2), L.Conv1D(5, 2, strides=2, padding="same"),
        L.AveragePooling1D(2, padding="same"), L.MaxPooling1D(2, strides=1), L.GlobalMaxPooling1D(), L.Dense(2)])
    return model, images((13, 3))


def depthwise_separable(keras):
    L = keras.layers
    model = keras.Sequential([
        keras.Input((9, 9, 3)), L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="relu6"),
        L.SeparableConv2D(4, 3, depth_multiplier=2, strides=2, padding="same", activation="relu"),
        L.MaxPooling2D(2, padding="same"), L.AveragePooling2D(2, strides=1),
        L.AveragePooling2D(3, strides=1, padding="same"), L.GlobalAveragePooling2D(),
        L.Dense(3)])
    return model, images((9, 9, 3))


def batch_norm(keras):
    L = keras.layers
    inp = keras.Input((6, 6, 2))
    x = L.BatchNormalization(epsilon=1e-2, momentum=0.9)(L.Conv2D(3, 3)(inp))
    seq = L.BatchNormalization(center=False)(L.Reshape((16, 3))(x))   # (T, C): normalises the last axis
    v = L.BatchNormalization(scale=False)(L.Dense(4)(L.Flatten()(seq)))
    return keras.Model(inp, v), images((6, 6, 2))


def activations(keras):
    L = keras.layers
    inp = keras.Input((5,))
    outs = [L.Activation(name)(inp) for name in ("relu", "sigmoid", "tanh", "softmax", "elu", "selu", "gelu",
                                                 "silu", "softplus", "softsign", "relu6", "hard_sigmoid",
                                                 "hard_silu", "mish", "linear", "leaky_relu")]
    outs += [L.ReLU()(inp), L.ReLU(max_value=6.0)(inp), L.ReLU(negative_slope=0.1)(inp), L.LeakyReLU(0.05)(inp),
             L.ELU(0.5)(inp), L.Softmax()(inp), L.Dense(3, activation="leaky_relu")(inp)]
    return keras.Model(inp, L.Concatenate()(outs)), images((5,)) * 4


def recurrent(keras):
    L = keras.layers
    inp = keras.Input((6, 3))
    a = L.LSTM(4, return_sequences=True)(inp)
    a = L.LSTM(3)(a)
    b = L.GRU(4, return_sequences=True)(inp)
    b = L.GRU(2, use_bias=False)(b)
    c = L.Bidirectional(L.LSTM(2, return_sequences=True))(inp)
    c = L.Bidirectional(L.GRU(2))(c)
    return keras.Model(inp, L.Concatenate()([a, b, c])), images((6, 3))


def token_lstm(keras):
    L = keras.layers
    model = keras.Sequential([keras.Input((7,), dtype="int32"), L.Embedding(20, 4), L.LSTM(5),
                              L.Dense(1, activation="sigmoid")])
    tokens = np.random.default_rng(2).integers(0, 20, size=(4, 7)).astype("int32")
    return model, tokens


def functional_residual(keras):
    L = keras.layers
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(3, 3, padding="same", activation="relu")(inp)
    x = L.Add()([x, inp])                                          # residual in the channels-first layout
    y = L.Dense(2)(x)                                              # Dense on (H, W, C): Keras's last axis
    z = L.Permute((3, 1, 2))(x)
    z = L.GlobalAveragePooling1D()(L.Reshape((3, 36))(z))
    flat = L.Flatten()(y)
    return keras.Model(inp, [L.Concatenate()([flat, z]), L.Activation("sigmoid")(y)]), images((6, 6, 3))




def preprocessing(keras):
    L = keras.layers
    norm = L.Normalization()
    norm.adapt(np.random.default_rng(3).normal(2.0, 3.0, size=(40, 4, 5, 3)).astype("float32"))
    inp = keras.Input((4, 5, 3))
    x = L.Conv2D(3, 1)(L.Rescaling(1 / 255.0, offset=-0.5)(inp))
    x = norm(x)                                                   # per channel, after a conv (channels first)
    x = L.TimeDistributed(L.Dense(2))(L.Reshape((20, 3))(x))
    x = L.LayerNormalization(center=False)(L.LayerNormalization(epsilon=1e-5)(x))
    return keras.Model(inp, x), images((4, 5, 3)) * 100




def nested(keras):
    """Transfer learning's shape: a functional base model inside a Sequential, and a Sequential block inside it."""
    L = keras.layers
    base_in = keras.Input((6, 6, 2))
    x = L.BatchNormalization(name="base_bn")(L.Conv2D(3, 3, name="base_conv")(base_in))
    block = keras.Sequential([keras.Input((4, 4, 3)), L.Conv2D(3, 1, name="block_conv"), L.ReLU(name="block_relu")],
                             name="block")
    base = keras.Model(base_in, L.Add(name="base_add")([x, block(x)]), name="base")
    model = keras.Sequential([keras.Input((6, 6, 2)), base, L.GlobalAveragePooling2D(), L.Dense(2, name="head")])
    return model, images((6, 6, 2))


def he_randomize(model, seed: int = 0, last_scale: float = 0.1):
    """Random weights that keep activations' scale through a deep network (He's rule per fan-in)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for weight in layer.weights:
            shape, path = tuple(weight.shape), weight.path
            if "variance" in path:
                values.append(rng.uniform(0.5, 1.5, shape))
            elif "gamma" in path:
                values.append(rng.uniform(0.8, 1.2, shape))
            elif len(shape) >= 2:
                fan_in = np.prod(shape[:-2] if "depthwise" in path else shape[:-1])
                values.append(rng.normal(0.0, np.sqrt(2.0 / fan_in), shape))
            else:
                values.append(rng.normal(0.0, 0.1, shape))
        if values:
            layer.set_weights([v.astype("float32") for v in values])
    last = next(layer for layer in reversed(model.layers) if layer.weights)
    last.set_weights([w * last_scale for w in last.get_weights()])
    return model


def mobilenet_v3(keras):
    """Keras's own MobileNetV3Small: squeeze-excite (pooling with keepdims, Multiply), hard-swish written as
    operations with numbers (``x + 3.0``, ``x * (1/6)``), Rescaling, ZeroPadding, depthwise convolutions."""
    model = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), alpha=0.75, weights=None, classes=3,
                                                classifier_activation=None, include_preprocessing=True)
    he_randomize(model, 4)
    return model, np.random.default_rng(5).uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")


mobilenet_v3.own_weights = True


def channels_first_and_conv_lstm(keras):
    """Convolutions with data_format="channels_first" (no permute needed), and Conv1D features into an LSTM."""
    L = keras.layers
    series_in = keras.Input((12, 3))                       # created first, yet the model's second input
    images_in = keras.Input((2, 8, 8))
    x = L.Conv2D(3, 3, padding="same", data_format="channels_first")(images_in)
    x = L.MaxPooling2D(2, data_format="channels_first")(L.BatchNormalization(axis=1)(x))
    x = L.GlobalAveragePooling2D(data_format="channels_first")(x)
    y = L.MaxPooling1D(2)(L.Conv1D(4, 3, activation="relu")(series_in))
    y = L.LSTM(3)(y)
    model = keras.Model([images_in, series_in], L.Dense(2)(L.Concatenate()([x, y])))
    return model, [images((2, 8, 8)), images((12, 3), seed=2)]


def merges_and_upsampling(keras):
    L = keras.layers
    inp = keras.Input((4, 5, 2))
    a = L.Conv2D(3, 1)(inp)
    b = L.Conv2D(3, 1)(inp)
    x = L.Average()([L.Subtract()([a, b]), a, b])
    x = L.UpSampling2D((2, 3))(x)
    y = L.UpSampling2D(2, interpolation="bilinear")(a)
    seq = L.UpSampling1D(3)(L.Reshape((20, 3))(b))
    return keras.Model(inp, [x, y, seq]), images((4, 5, 2))


BUILDERS = [dense_mlp, conv_flatten_dense, conv2d_padding, conv1d_pooling, depthwise_separable, batch_norm,
            activations, recurrent, token_lstm, functional_residual, preprocessing, nested,
            mobilenet_v3, channels_first_and_conv_lstm,
            merges_and_upsampling]
