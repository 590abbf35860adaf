"""The object vocabulary of the retrieval and VQA datasets: MS-COCO's 80 categories and the
caption words that name them.

It is data about the datasets, so it lives beside them: CLIP's backbone job encodes these
terms as a text dataset's "classes", and the caption edits swap one term for another.
"""

from __future__ import annotations

# The 80 MS-COCO object categories, singular and lower case, in the dataset's category order
# ("skis" is written "ski", its singular; "scissors" has none).
OBJECT_TERMS: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "ski", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)

# Common caption words for a category (singular; plurals follow from :func:`pluralise`).
# Captions say "a man" far more often than "a person", so without these most people would
# go unmatched.  Modest on purpose: each entry is unambiguous in COCO-style captions.
# ("people" needs no entry: it is the plural of "person" itself.)
SYNONYMS: dict[str, str] = {
    "man": "person", "woman": "person", "boy": "person", "girl": "person", "child": "person",
    "kid": "person", "guy": "person", "lady": "person",
    "bike": "bicycle", "motorbike": "motorcycle", "plane": "airplane", "jet": "airplane",
    "puppy": "dog", "kitten": "cat", "sofa": "couch", "television": "tv",
    "cellphone": "cell phone", "phone": "cell phone", "doughnut": "donut", "fridge": "refrigerator",
    "hydrant": "fire hydrant", "racket": "tennis racket", "teddy": "teddy bear",
}
