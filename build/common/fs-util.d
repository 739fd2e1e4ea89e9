build/common/fs-util.o: common/fs-util.c common/fs-util.h common/macro.h
common/fs-util.h:
common/macro.h:
