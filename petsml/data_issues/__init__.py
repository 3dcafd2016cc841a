"""What is wrong with the data: near-duplicates, likely label errors, outliers, poor photos.

Great Expectations checks structure and sha256 catches byte-identical files; neither sees the
faults that move accuracy numbers: the same photo resized or re-encoded in train and test, a
wrong breed label, a photo that shows no pet, a photo too blurred or dark to learn from. The
``data_issues`` stage finds them from what the pipeline already has - the featurize stage's
frozen features (no photo passes the backbone again), the decoded pixels and the raw files
(a 32x32 greyscale read for the perceptual hash of candidate pairs only):

- :mod:`~petsml.data_issues.duplicates`: pairs close in embedding space, confirmed by a
  perceptual hash (:mod:`~petsml.data_issues.phash`); pairs across splits are leakage;
- :mod:`~petsml.data_issues.label_errors`: out-of-fold probabilities of a linear probe, then
  confident learning;
- :mod:`~petsml.data_issues.outliers`: low density in embedding space, or the ImageNet head
  seeing no animal in a data set of animals;
- :mod:`~petsml.data_issues.quality`: blurry, dark, tiny;
- :mod:`~petsml.data_issues.find` runs them all and builds the report and the exclusion list,
  :mod:`~petsml.data_issues.report` writes the files, :mod:`~petsml.data_issues.grid` reads the
  label errors back for the web page.
"""
