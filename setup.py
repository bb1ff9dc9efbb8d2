# All settings are in settings.ini: edit there, not here (nbdev 2 layout, without pkg_resources).
from configparser import ConfigParser
import setuptools, shlex

config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

setup_cfg = {k: cfg[k] for k in 'version description keywords author author_email'.split()}
requirements = shlex.split(cfg.get('requirements', ''))
dev_requirements = shlex.split(cfg.get('dev_requirements', ''))
team_requirements = shlex.split(cfg.get('team_requirements', ''))
spark_requirements = shlex.split(cfg.get('spark_requirements', ''))
docs_requirements = shlex.split(cfg.get('docs_requirements', ''))

setuptools.setup(
    name=cfg['lib_name'],
    license='Apache Software License 2.0',
    classifiers=[
        'Development Status :: 3 - Alpha',
        'Intended Audience :: Developers',
        'License :: OSI Approved :: Apache Software License',
        'Natural Language :: English',
    ] + [f'Programming Language :: Python :: {v}' for v in ('3.10', '3.11', '3.12')],
    url=cfg['git_url'],
    packages=setuptools.find_packages(include=['taxi_duration', 'taxi_duration.*']),
    package_data={'taxi_duration': ['static/*', 'templates/*']},  # the web page, the monitoring report
    include_package_data=True,
    install_requires=requirements,
    extras_require={'dev': dev_requirements, 'team': team_requirements, 'spark': spark_requirements, 'docs': docs_requirements},
    python_requires='>=' + cfg['min_python'] + ',<3.13',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    zip_safe=False,
    entry_points={
        'console_scripts': cfg.get('console_scripts', '').split(),
        'nbdev': [f"{cfg.get('lib_path')}={cfg.get('lib_path')}._modidx:d"],
    },
    **setup_cfg,
)
