build/chunkstore/backend-local.o: chunkstore/backend-local.c \
 chunkstore/backend.h common/fs-util.h common/log.h common/macro.h
chunkstore/backend.h:
common/fs-util.h:
common/log.h:
common/macro.h:
