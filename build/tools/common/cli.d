build/tools/common/cli.o: tools/common/cli.c tools/common/cli.h \
 chunkstore/repo.h chunkstore/backend.h chunkstore/chunker.h \
 chunkstore/index.h chunkstore/pack.h chunkstore/format.h common/buf.h \
 common/fs-util.h common/log.h common/macro.h
tools/common/cli.h:
chunkstore/repo.h:
chunkstore/backend.h:
chunkstore/chunker.h:
chunkstore/index.h:
chunkstore/pack.h:
chunkstore/format.h:
common/buf.h:
common/fs-util.h:
common/log.h:
common/macro.h:
