"""Similar-photo search: the registered model's own backbone embeddings of the train and
validation photos, searched exactly by cosine similarity (:mod:`petsml.similar.index`), built
from the decoded cache or the raw photos (:mod:`petsml.similar.embed`).

Domain code: no MLflow here. The tracking layer builds an index when it logs a model and ships
it inside that model, so a registered version and its index never disagree.
"""
