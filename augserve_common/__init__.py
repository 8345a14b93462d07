"""What every package of augserve shares and none owns: the priors used where no
prediction exists (:mod:`augserve_common.priors`), the strict pydantic base of every
config (:mod:`augserve_common.strict`) and Redis URL handling
(:mod:`augserve_common.redis_url`).  It imports no other augserve package."""
